"""`testbed reproduce` around its jobs: only the reference policies of run.policies run (the baseline
check only with the oracle), a run with failed jobs records that outcome in provenance.json, and
the report keeps working when a reference is left out."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed import reproduce
from testbed.agent_factory import AGENTS
from testbed.config import load_config, to_dict
from testbed.metrics import METRIC_KEYS
from testbed.report import write_outputs
from testbed.runner import ACTION_MODES, evaluation_label


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

    for kind in ("train", "references", "evaluate", "adapt", "fixed"):
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


def summary(references: list[str], seeds: int = 2) -> dict:
    """A reproduction summary as ``reproduce.collect`` returns it, with these reference policies."""
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
            "fixed_task": [{"seed": 0, "ppo_mbps": 1.0, "oracle_mbps": 2.0, "fraction": 0.5}] if "oracle" in references
            else []}


def test_the_evaluation_is_the_main_table_with_both_action_modes(tmp_path):
    write_outputs(tmp_path, summary(["random", "max_power", "greedy", "oracle"]))
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("**Evaluation on the training distribution's fixed set of 4 tasks")
    assert "held-out distribution's fixed set" in table
    for row in ("| PPO (argmax) |", "| PPO (sampled) |", "| RNN + attention (sampled) |", "| per-band oracle |"):
        assert table.count(row) == 4, row                 # two distributions, values and fractions
    assert "| per-band oracle | 3 ± n/a |" in table and "| PPO (argmax) | 2 ± 0.1 |" in table
    results = (tmp_path / "results.md").read_text()
    assert results.index("## Evaluation") < results.index("## Fig. 3") < results.index("End of training")
    assert "of the per-band oracle's throughput (best agent 67%)" in results    # the claim reads the evaluation


def test_the_report_works_without_the_oracle(tmp_path):
    write_outputs(tmp_path, summary(["random", "greedy"]))
    table = (tmp_path / "table.md").read_text()
    assert "oracle |" not in table and "| greedy | 3 ± n/a |" in table
    assert "No fractions of the per-band oracle: it is not among run.policies" in table
    results = (tmp_path / "results.md").read_text()
    assert "*About 97 % of exhaustive search*: not judged" in results
    assert "Baseline strength" in results and "Not run: it measures PPO against the per-band oracle" in results
    assert "oracle on the same tasks" not in (tmp_path / "adaptation.md").read_text()
