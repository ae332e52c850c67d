"""`testbed reproduce` around its jobs: only the reference policies of run.policies run (the baseline
check only with the oracle), a run with failed jobs records that outcome in provenance.json, and
the report keeps working when a reference is left out. The informed-PPO ceiling: with the hardware
task family (quick sizes, one seed) its jobs run on informed envs and play the adaptation's very
tasks, the report leads with the value of information and gives the adaptation as fractions
recomputed here from the run folders, a rerun into a results folder without the informed jobs runs
only them; the standard family runs none and the report says so."""
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from testbed import reproduce
from testbed.agent_factory import AGENTS
from testbed.checkpoint import load_checkpoint, read_metrics
from testbed.config import load_config, to_dict
from testbed.env import SpectrumVectorEnv
from testbed.metrics import METRIC_KEYS
from testbed.report import write_outputs
from testbed.runner import ACTION_MODES, evaluation_label

ROOT = Path(__file__).resolve().parents[2]
INFORMED_FOLDERS = ("train-ppo_informed-seed0", "evaluate-informed-seed0", "informed-test-seed0")


class ThreadPool:
    """The local pool's interface on threads, so the jobs the test replaces are the ones that run;
    a job's RuntimeError fails that job only (as on a cluster)."""

    job_errors = (RuntimeError,)
    workers = 2

    def __init__(self):
        self.pool = ThreadPoolExecutor(2)

    @staticmethod
    def describe(err):
        return f"{type(err).__name__}: {err}"

    def submit(self, name, job, *args):
        return self.pool.submit(job, *args)

    def running(self, pending):
        return 0

    def stop(self, pending):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown()


@pytest.fixture
def jobs(monkeypatch):
    """Every job replaced by one that records its arguments; the MAML training fails."""
    calls = []

    def fake(kind):
        def job(*args):
            calls.append((kind, args))
            if kind == "train" and args[1] == "maml":
                raise RuntimeError("worker lost its disk")
            return "done"
        return job

    for kind in ("train", "references", "evaluate", "adapt", "fixed", "informed"):
        monkeypatch.setattr(reproduce, f"_job_{kind}", fake(kind))
    monkeypatch.setattr(reproduce, "_executor", lambda workers, cluster, out: ThreadPool())
    return calls


def test_failed_jobs_are_the_outcome_in_provenance_and_only_run_policies_run(tmp_path, jobs):
    config = tmp_path / "config.yaml"
    config.write_text("run:\n  policies: [random, greedy]\n")
    with pytest.raises(reproduce.JobsFailed) as err:
        reproduce.reproduce(str(config), quick=True, num_seeds=1, out_dir=str(tmp_path / "out"), command=["reproduce"])
    assert set(err.value.failed) == {"train-maml-seed0", "evaluate-seed0", "adapt-seed0"}
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["outcome"].startswith("JobsFailed: 3 jobs failed") and record["end"] is not None
    assert record["failed_jobs"]["train-maml-seed0"] == "RuntimeError: worker lost its disk"
    assert "worker lost its disk" in (tmp_path / "out" / "results.md").read_text()
    kinds = [kind for kind, _ in jobs]
    assert "fixed" not in kinds                      # the baseline check needs the oracle
    (references,) = [args for kind, args in jobs if kind == "references"]
    assert list(references[-1]) == ["random", "greedy"]
    assert [args[2] for kind, args in jobs if kind == "evaluate"] == [None]   # the references' evaluation only
    assert "informed" not in kinds and len([1 for kind, _ in jobs if kind == "train"]) == len(AGENTS)  # standard family
    assert record["informed_ceiling"] is False


def summary(references: list[str], seeds: int = 2) -> dict:
    """A reproduction summary as ``reproduce.collect`` returns it, with these reference policies (standard
    task family: no informed ceiling)."""
    def stat(value: float) -> dict:
        return {k: {"mean": value, "std": 0.1} for k in METRIC_KEYS}

    labels = [evaluation_label({"agent": a, "actions": m}) for a in AGENTS for m in ACTION_MODES]
    evaluation = {d: {**{label: stat(2.0) for label in labels}, **{n: stat(3.0) for n in references}}
                  for d in ("train", "test")}
    adapters = reproduce.ADAPTERS
    return {"config": to_dict(load_config()), "quick": False, "seeds": seeds, "workers": 1, "wall_s": 60.0,
            "backends": {"train": "sim", "evaluate": "sim"}, "bench": None,
            "train_episodes": 3, "tail_episodes": 1, "num_envs": 4, "adapt_num_envs": 4, "references": references,
            "evaluation_set": {"num_tasks": 4, "episodes": 2, "seed": 0}, "evaluation": evaluation,
            "curves": {a: {k: {"mean": [1.0] * 3, "std": [0.1] * 3} for k in METRIC_KEYS} for a in AGENTS},
            "final": {a: stat(1.0) for a in AGENTS}, "adaptation": {a: {str(p): stat(1.5) for p in (0, 1)} for a in adapters},
            "test_references": {n: stat(3.0) for n in references}, "adapt_points": [0, 1],
            "informed": None, "samples_to_reach": None,
            "adaptation_fractions": {"oracle": {a: {str(p): {"return": None, "throughput_mbps": {"mean": 0.5, "std": 0.1}}
                                                    for p in (0, 1)} for a in adapters}} if "oracle" in references else {},
            "fixed_task": [{"seed": 0, "ppo_mbps": 1.0, "oracle_mbps": 2.0, "fraction": 0.5}] if "oracle" in references
            else []}


def test_the_evaluation_is_the_main_table_with_both_action_modes(tmp_path):
    write_outputs(tmp_path, summary(["random", "max_power", "greedy", "oracle"]))
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("No informed ceiling for task family standard")
    assert "\n**Evaluation on the training distribution's fixed set of 4 tasks" in table
    assert "held-out distribution's fixed set" in table
    for row in ("| PPO (argmax) |", "| PPO (sampled) |", "| RNN + attention (sampled) |", "| per-band oracle |"):
        assert table.count(row) == 4, row                 # two distributions, values and fractions
    assert "| per-band oracle | 3 ± n/a |" in table and "| PPO (argmax) | 2 ± 0.1 |" in table
    results = (tmp_path / "results.md").read_text()
    assert results.index("## Evaluation") < results.index("## Fig. 3") < results.index("End of training")
    assert "of the per-band oracle's throughput (best agent 67%)" in results    # the claim reads the evaluation
    assert results.index("## Value of information") < results.index("## Evaluation")
    assert "not judged (No informed ceiling for task family standard" in results
    assert "*Every learned agent at least matches greedy's return on the training tasks (argmax)*: does not hold" \
        in results                                                                # agents 2, greedy 3
    adaptation = (tmp_path / "adaptation.md").read_text()
    assert "| PPO fine-tuned | — | — |" in adaptation and "| MAML | 0.5 ± 0.1 | 0.5 ± 0.1 |" in adaptation


def test_the_report_works_without_the_oracle(tmp_path):
    write_outputs(tmp_path, summary(["random", "greedy"]))
    table = (tmp_path / "table.md").read_text()
    assert "oracle |" not in table and "| greedy | 3 ± n/a |" in table
    assert "No fractions of the per-band oracle: it is not among run.policies" in table
    results = (tmp_path / "results.md").read_text()
    assert "*About 97 % of exhaustive search*: not judged" in results
    assert "Baseline strength" in results and "Not run: it measures PPO against the per-band oracle" in results
    assert "oracle on the same tasks" not in (tmp_path / "adaptation.md").read_text()


def test_the_hardware_family_adds_the_informed_jobs_after_its_training(tmp_path, jobs):
    config = tmp_path / "config.yaml"
    config.write_text("network:\n  task_family: hardware\nrun:\n  policies: [random, greedy]\n")
    with pytest.raises(reproduce.JobsFailed) as err:        # the MAML training fails, the informed jobs go on
        reproduce.reproduce(str(config), quick=True, num_seeds=1, out_dir=str(tmp_path / "out"), command=["reproduce"])
    assert set(err.value.failed) == {"train-maml-seed0", "evaluate-seed0", "adapt-seed0"}
    informed_train = [args for kind, args in jobs if kind == "train" and args[-1].endswith("train-ppo_informed-seed0")]
    assert len(informed_train) == 1 and informed_train[0][1] == "ppo"
    assert informed_train[0][0]["network"]["informed"] is True
    assert informed_train[0][0]["agent"]["shared_link_head"] is True      # the actor that uses the parameters
    assert all(args[0]["network"]["informed"] is False and args[0]["agent"]["shared_link_head"] is False
               for kind, args in jobs if kind == "train" and args is not informed_train[0])
    (informed,) = [args for kind, args in jobs if kind == "informed"]
    assert informed[0]["network"]["informed"] is True and informed[3] == informed_train[0][-1]
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["informed_ceiling"] is True


def run_reproduce(out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "reproduce", "--quick", "--seeds", "1", "--workers", "2",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def hardware_run(tmp_path_factory) -> Path:
    """A quick reproduction of the default config (configs/paper.yaml: task family hardware), one seed."""
    out = tmp_path_factory.mktemp("hardware") / "out"
    run_reproduce(out)
    return out


def saved_config(folder: Path) -> dict:
    return yaml.safe_load((folder / "config.yaml").read_text())


def drawn_tasks(folder: Path) -> dict[str, torch.Tensor]:
    """The tasks an env of the run folder's config draws at its first reset."""
    config = load_config(saved_config(folder))
    env = SpectrumVectorEnv(config)
    env.reset(seed=config.env.seed)
    tasks = {k: v for k, v in vars(env.net.tasks).items() if v is not None}
    env.close()
    return tasks


def test_the_informed_jobs_run_on_informed_envs_and_play_the_adaptations_tasks(hardware_run):
    runs = hardware_run / "runs"
    informed = [runs / "train-ppo_informed-seed0", runs / "informed-test-seed0",
                *(runs / "evaluate-informed-seed0" / d for d in ("train", "test"))]
    for folder in informed:
        assert saved_config(folder)["network"]["informed"] is True, folder
    for folder in [runs / "train-ppo-seed0", runs / "reference-test-seed0", runs / "evaluate-seed0" / "test",
                   *(runs / f"adapt-{label}-seed0" for label in reproduce.ADAPTERS)]:
        assert saved_config(folder)["network"]["informed"] is False, folder
    ck = load_checkpoint(runs / "train-ppo_informed-seed0" / "checkpoints" / "latest.pt")
    assert ck["agent"] == "ppo" and ck["config"]["network"]["informed"] is True and ck["episode"] == 8
    rows = read_metrics(runs / "informed-test-seed0" / "metrics.jsonl")
    episodes = saved_config(runs / "adapt-maml-seed0")["env"]["episodes_per_task"]
    assert sorted(r["agent"] for r in rows) == ["ppo/argmax"] * episodes + ["ppo/sample"] * episodes
    # same tasks as the adaptation and its references: `informed` changes the observation, not the draws
    adapt = drawn_tasks(runs / "adapt-maml-seed0")
    assert "pa_compression_dbm" in adapt
    for folder in (runs / "informed-test-seed0", runs / "reference-test-seed0"):
        tasks = drawn_tasks(folder)
        assert tasks.keys() == adapt.keys() and all(torch.equal(tasks[k], adapt[k]) for k in adapt), folder
    described = json.loads((runs / "informed-test-seed0" / "tasks.json").read_text())
    assert described["mean_pa_compression_dbm"] == pytest.approx(adapt["pa_compression_dbm"].mean(-1).tolist())
    for d in ("train", "test"):                  # the evaluation protocol's fixed sets
        assert json.loads((runs / "evaluate-informed-seed0" / d / "tasks.json").read_text()) == \
            json.loads((runs / "evaluate-seed0" / d / "tasks.json").read_text())


def episode_mean(rows: list[dict], agent: str, key: str) -> float:
    return float(np.mean([r[key] for r in rows if r["agent"] == agent]))


def test_the_report_leads_with_the_value_of_information_and_gives_fractions_of_the_informed_policy(hardware_run):
    runs = hardware_run / "runs"
    summary = json.loads((hardware_run / "summary.json").read_text())
    evaluation = read_metrics(runs / "evaluate-informed-seed0" / "test" / "metrics.jsonl")
    informed_return = summary["informed"]["evaluation"]["test"]["ppo_informed/argmax"]["return"]["mean"]
    assert informed_return == pytest.approx(episode_mean(evaluation, "ppo/argmax", "return"))
    ppo = summary["evaluation"]["test"]["ppo/argmax"]["return"]["mean"]
    random = summary["evaluation"]["test"]["random"]["return"]["mean"]
    above = summary["informed"]["value"]["test"]["return_above_random"]
    assert above == (pytest.approx((informed_return - random) / (ppo - random)) if ppo > random else None)
    table = (hardware_run / "table.md").read_text()
    assert table.startswith("**QUICK (smoke-test sizes, not results): Value of information: informed PPO")
    assert "| held-out distribution |" in table and table.index("Value of information") < table.index("Evaluation on")
    results = (hardware_run / "results.md").read_text()
    assert results.index("## QUICK (smoke-test sizes, not results): Value of information") < results.index("## QUICK (smoke-test sizes, not results): Evaluation")

    # one fraction, recomputed from the run folders: MAML's return after 1 episode against the informed PPO
    refs = read_metrics(runs / "reference-test-seed0" / "metrics.jsonl")
    informed = read_metrics(runs / "informed-test-seed0" / "metrics.jsonl")
    r_random, r_informed = episode_mean(refs, "random", "return"), episode_mean(informed, "ppo/argmax", "return")
    maml = read_metrics(runs / "adapt-maml-seed0" / "metrics.jsonl")
    cell = summary["adaptation_fractions"]["informed"]["maml"]["1"]["return"]
    if r_informed > r_random:
        expected = (maml[1]["return"] - r_random) / (r_informed - r_random)
        assert cell["mean"] == pytest.approx(expected)
        lines = (hardware_run / "adaptation.md").read_text().splitlines()
        at = next(i for i, x in enumerate(lines) if "return / ep in adaptation episode n as a fraction of the informed" in x)
        row = next(x for x in lines[at:] if x.startswith("| MAML |"))
        assert row.split(" | ")[2] == f"{cell['mean']:.3g} ± n/a"                 # the column n=1
    else:
        assert cell is None
    oracle = summary["adaptation_fractions"]["oracle"]["ppo_scratch"]["2"]["throughput_mbps"]["mean"]
    scratch = read_metrics(runs / "adapt-ppo_scratch-seed0" / "metrics.jsonl")
    assert oracle == pytest.approx(scratch[2]["throughput_mbps"] / episode_mean(refs, "oracle", "throughput_mbps"))

    samples = summary["samples_to_reach"]
    assert samples["episode_steps"] == 20 and samples["last_episode"] == 5 and samples["threshold"] == 0.9
    if r_informed > r_random:
        curve = [(r["return"] - r_random) / (r_informed - r_random) for r in maml]
        first = next((n for n, f in enumerate(curve) if f >= 0.9), None)
        assert samples["adapters"]["maml"] == {"episode": first, "steps": None if first is None else first * 20}
    assert "Samples to reach 90% of the informed PPO" in results


def test_a_rerun_into_a_folder_without_the_informed_jobs_runs_only_them(hardware_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(hardware_run, out)            # copy2: modification times kept
    for name in INFORMED_FOLDERS:
        shutil.rmtree(out / "runs" / name)
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    run_reproduce(out)
    assert {p: p.stat().st_mtime_ns for p in before} == before            # finished jobs were not repeated
    for name in INFORMED_FOLDERS:
        assert list((out / "runs" / name).rglob("metrics.jsonl")), name
    again, first = (json.loads((d / "summary.json").read_text()) for d in (out, hardware_run))
    assert again["informed"]["evaluation"] == first["informed"]["evaluation"]       # same seeds, same numbers
