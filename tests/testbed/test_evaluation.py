"""The evaluation protocol: a fixed, seeded set of tasks per distribution, apart from the training
seed and task stream; every agent (argmax and sampled actions) and every reference policy plays
exactly the same tasks and draws; reruns are identical."""
import json

import pytest
import torch

from sim.network import SimNetwork
from testbed.agent_factory import policy_of_checkpoint
from testbed.checkpoint import load_checkpoint, read_metrics
from testbed.config import ConfigError, load_config
from testbed.env import SpectrumVectorEnv, evaluation_tasks
from testbed.runner import evaluation_config, evaluate, train

SMALL = {"network": {"episode_steps": 6}, "env": {"num_envs": 3}, "agent": {"episodes": 2},
         "evaluation": {"num_tasks": 4, "episodes": 2, "seed": 7}}


def tasks_of(config) -> dict[str, torch.Tensor]:
    env = SpectrumVectorEnv(config)
    env.reset(seed=config.env.seed)
    return env.net.tasks.describe()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_evaluation_set_is_fixed_by_its_seed_and_not_by_the_training_seed():
    base = load_config(SMALL)
    for dist in ("train", "test"):
        sets = [tasks_of(evaluation_config(load_config(base, {"env": {"seed": s}}), dist)) for s in (0, 5, 7)]
        assert same(sets[0], sets[1]) and same(sets[0], sets[2])
        other = tasks_of(evaluation_config(load_config(base, {"evaluation": {"seed": 8}}), dist))
        assert not same(sets[0], other)
    train_set, test_set = (tasks_of(evaluation_config(base, d)) for d in ("train", "test"))
    assert not same(train_set, test_set)
    assert (test_set["path_loss_exponent"] >= 4.0).all()            # drawn from the held-out ranges


def test_the_evaluation_set_is_none_of_the_training_tasks():
    """Not the first tasks of a training stream whose seed equals the evaluation seed, nor any later one."""
    config = load_config(SMALL, {"env": {"seed": 7}})
    evaluation = evaluation_tasks(evaluation_config(config, "train"), 4).path_loss_exponent
    net = SimNetwork(config.network, config.tasks, 4, seed=7)
    net.reset(seed=7)
    stream = [net.tasks.path_loss_exponent]
    for _ in range(20):
        net.reset()
        stream.append(net.tasks.path_loss_exponent)
    assert not torch.isin(evaluation, torch.cat(stream)).any()


def test_the_evaluation_tasks_stay_across_episodes_and_resets():
    config = evaluation_config(load_config(SMALL), "train")
    env = SpectrumVectorEnv(config)
    env.reset(seed=1)
    first = env.net.tasks.describe()
    for _ in range(3 * config.network.episode_steps):
        *_, info = env.step(env.action_space.sample())
        assert not info["new_task"].any()
    assert same(first, env.net.tasks.describe())
    env.reset(seed=2)
    assert same(first, env.net.tasks.describe())


def test_a_bad_evaluation_config_fails_on_load():
    with pytest.raises(ConfigError, match="env.num_envs \\(3\\) must equal evaluation.num_tasks \\(4\\)"):
        load_config(SMALL, {"env": {"task_set": "evaluation"}})
    with pytest.raises(ConfigError, match="cannot also use task_seed"):
        load_config(SMALL, {"env": {"task_set": "evaluation", "num_envs": 4, "task_seed": 1}})
    with pytest.raises(ConfigError, match="evaluation.num_tasks: 0 is out of range"):
        load_config(SMALL, {"evaluation": {"num_tasks": 0}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluation")
    run = train(load_config(SMALL), "rnn", tmp / "train", progress=False)
    return tmp, policy_of_checkpoint(load_checkpoint(run / "checkpoints" / "latest.pt"))


def test_every_policy_sees_the_same_tasks_and_draws(trained, monkeypatch):
    """Every policy's episodes start from the same tasks and step through the same random draws."""
    tmp, policy = trained
    seen = []
    draw = SimNetwork.draw_noise

    def recording(self):
        noise = draw(self)
        seen.append((self.tasks.describe(), noise))
        return noise

    monkeypatch.setattr(SimNetwork, "draw_noise", recording)
    config = load_config(SMALL)
    summary = evaluate(config, "rnn", policy, tmp / "eval", progress=False)
    assert list(summary) == ["rnn/argmax", "rnn/sample", "random", "max_power", "greedy", "oracle", "switch_off"]
    steps = config.evaluation.episodes * config.network.episode_steps
    assert len(seen) == len(summary) * steps
    runs = [seen[i * steps:(i + 1) * steps] for i in range(len(summary))]
    for other in runs[1:]:
        for (tasks_a, noise_a), (tasks_b, noise_b) in zip(runs[0], other):
            assert same(tasks_a, tasks_b)
            assert torch.equal(noise_a.normal, noise_b.normal) and torch.equal(noise_a.uniform, noise_b.uniform)
            assert torch.equal(noise_a.arrivals_bits, noise_b.arrivals_bits)
    record = json.loads((tmp / "eval" / "tasks.json").read_text())
    assert record["path_loss_exponent"] == runs[0][0][0]["path_loss_exponent"].tolist()
    assert summary["rnn/argmax"] != summary["rnn/sample"]        # the two action modes did act differently


def test_an_evaluation_is_identical_when_rerun(trained):
    tmp, policy = trained
    config = load_config(SMALL, {"env": {"task_distribution": "test"}})
    rows = []
    for folder in ("a", "b"):
        evaluate(config, "rnn", policy, tmp / folder, progress=False)
        rows.append([{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(tmp / folder / "metrics.jsonl")])
    assert rows[0] == rows[1]
    assert {r["tasks"] for r in rows[0]} == {"test"}
    assert {(r["agent"], r["actions"]) for r in rows[0]} >= {("rnn/argmax", "argmax"), ("rnn/sample", "sample"),
                                                         ("oracle", "reference")}
    assert len(rows[0]) == 7 * config.evaluation.episodes
