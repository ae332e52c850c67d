"""Checkpoints: round trip, weights-only loading, atomic writes; metrics logs survive a kill."""
import json
import pickle

import pytest
import torch

from agents.config import AgentConfig
from agents.policies import MLPPolicy
from agents.ppo import PPO
from testbed.checkpoint import (CheckpointError, MetricsLog, load_checkpoint, read_metrics, save_checkpoint,
                                truncate_metrics)
from testbed.config import load_config, to_dict


def trained_agent() -> PPO:
    torch.manual_seed(0)
    agent = PPO(MLPPolicy(6, 2, 3, 8, 1), AgentConfig(), 4, 5, seed=7)
    s = agent.storage
    s.obs.normal_(), s.rewards.normal_()
    s.step = s.num_steps
    s.mark_end(0.0)
    agent.update()
    return agent


def test_round_trip_restores_parameters_optimiser_generator_and_counts(tmp_path):
    agent = trained_agent()
    config = to_dict(load_config(None))
    save_checkpoint(tmp_path / "ck.pt", "ppo", config, 12, agent.state_dict())
    ck = load_checkpoint(tmp_path / "ck.pt")
    assert ck["agent"] == "ppo" and ck["episode"] == 12 and ck["config"] == config
    torch.manual_seed(1)
    other = PPO(MLPPolicy(6, 2, 3, 8, 1), AgentConfig(), 4, 5, seed=0)
    other.load_state_dict(ck["state"])
    for k in agent.params:
        assert torch.equal(agent.params[k], other.params[k])
    assert other.num_updates == 1
    a_state, b_state = agent.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
    assert all(torch.equal(a_state[i]["exp_avg_sq"], b_state[i]["exp_avg_sq"]) for i in a_state)
    assert torch.equal(agent.generator.get_state(), other.generator.get_state())
    assert list((tmp_path).iterdir()) == [tmp_path / "ck.pt"]      # no temporary file left behind


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_a_file_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "state": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a testbed checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_truncate_keeps_complete_lines_before_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for e in range(5):
            log.write({"episode": e, "return": float(e)})
    with open(path, "a") as fh:
        fh.write('{"episode": 5, "ret')                 # torn by a kill
    assert truncate_metrics(path, 3) == 3
    assert [r["episode"] for r in read_metrics(path)] == [0, 1, 2]
    assert path.read_text().endswith("\n")
    with MetricsLog(path) as log:
        log.write({"episode": 3})
    assert [json.loads(line)["episode"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_a_line_that_is_not_a_json_object_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for bad in ("[1, 2]", "{not json", "17", '"text"'):
        path.write_text(f'{{"episode": 0}}\n{bad}\n{{"episode": 1}}\n')
        for read in (read_metrics, lambda p: truncate_metrics(p, 1)):
            with pytest.raises(CheckpointError, match=f"^{path}:2: not a JSON object"):
                read(path)
    path.write_text('{"episode": 0}\n{"return": 1.0}\n')
    with pytest.raises(CheckpointError, match=f"^{path}:2: no integer 'episode'"):
        truncate_metrics(path, 1)
    assert read_metrics(path) == [{"episode": 0}, {"return": 1.0}]


def test_only_a_torn_last_line_is_left_out(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"episode": 0}\n\n{"episode": 1}\n{"episode": 2, "ret')
    assert [r["episode"] for r in read_metrics(path)] == [0, 1]
    path.write_text('{"episode": 0}\n{"episode": 1, "ret\n')        # ended by a newline: not torn, broken
    with pytest.raises(CheckpointError, match=":2: not a JSON object"):
        read_metrics(path)
    with pytest.raises(CheckpointError, match="no metrics log"):
        read_metrics(tmp_path / "none.jsonl")


def test_a_checkpoint_missing_a_field_is_refused(tmp_path):
    for missing in ("agent", "config", "episode", "state"):
        payload = {"format": 1, "agent": "ppo", "config": {}, "episode": 3, "state": {}}
        del payload[missing]
        torch.save(payload, tmp_path / "ck.pt")
        with pytest.raises(CheckpointError, match=f"not a complete testbed checkpoint: '{missing}' is missing"):
            load_checkpoint(tmp_path / "ck.pt")
