"""`testbed reproduce --bench`: on the mock bench (quick sizes), every training runs in the simulator
and every evaluation, reference run and adaptation on the bench (asserted from the run folders'
config.yaml and backend.json); the budget is printed and recorded before anything transmits; the
report names backend, radios and calibration and sets sim and bench side by side; a rerun redoes
only what is missing; ``--twin`` trains on a twin written by `testbed calibrate`; a bench config
without ``--bench`` is refused; bench jobs never overlap and a failed radio stops the bench jobs
only, with the failed job named."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from testbed import reproduce
from testbed.agent_factory import AGENTS
from testbed.calibrate import calibrate, describe, twin_config, write_twin
from testbed.cli import main
from testbed.config import load_config, save_config
from testbed.runner import BackendFailure
from tests.data import twin_bench
from tests.testbed.test_reproduce import ThreadPool

ROOT = Path(__file__).resolve().parents[2]
BENCH_RADIOS = ["bs0", "bs1", "bs2", "ue0", "ue1"]
SIM_FOLDERS = [f"train-{a}-seed0" for a in AGENTS] + [f"evaluate-sim-{w}/{d}" for w in ("seed0", "references")
                                                       for d in ("train", "test")]
BENCH_FOLDERS = ([f"evaluate-{w}/{d}" for w in ("seed0", "references") for d in ("train", "test")]
                 + ["reference-test-seed0"] + [f"adapt-{label}-seed0" for label in reproduce.ADAPTERS])


def run_reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "reproduce", "--quick", "--seeds", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def saved(folder: Path) -> tuple[dict, dict]:
    """A run folder's config.yaml and backend.json."""
    return yaml.safe_load((folder / "config.yaml").read_text()), json.loads((folder / "backend.json").read_text())


def stamps(runs: Path) -> dict[str, int]:
    """Modification time of every metrics log and backend record under ``runs``."""
    return {str(p.relative_to(runs)): p.stat().st_mtime_ns for name in ("metrics.jsonl", "backend.json")
            for p in runs.rglob(name)}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    done = run_reproduce("--bench", "configs/bench_mock.yaml", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_training_runs_in_the_simulator_and_the_rest_on_the_bench(bench_run):
    out, _ = bench_run
    runs = out / "runs"
    bench = load_config("bench_mock")
    for name in SIM_FOLDERS:
        config, backend = saved(runs / name)
        assert config["backend"] == "sim" and backend == {"backend": "sim"}, name
        assert {k: config["network"][k] for k in ("num_bs", "num_ue", "num_bands", "num_levels")} == \
            {"num_bs": 3, "num_ue": 10, "num_bands": 5, "num_levels": 4}, name      # the bench's network
    for name in BENCH_FOLDERS:
        config, backend = saved(runs / name)
        assert config["backend"] == "mock" and backend["backend"] == "mock", name
        assert [r["name"] for r in config["hardware"]["radios"]] == [e.name for e in bench.hardware.radios]
        assert [r["name"] for r in backend["radios"]] == BENCH_RADIOS and set(backend["calibration"]) == set(BENCH_RADIOS)
    assert not (runs / "train-ppo-seed0" / "hardware").exists()
    for label in reproduce.ADAPTERS:       # each adapter played its episodes on the bench
        assert len((runs / f"adapt-{label}-seed0" / "metrics.jsonl").read_text().splitlines()) == 3


def test_the_budget_is_stated_before_the_run_and_recorded(bench_run):
    out, done = bench_run
    lines = done.stdout.splitlines()
    assert lines[0].startswith("bench budget: backend mock, radios bs0 (mock, bs)")
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["bench"]["budget"]
    # evaluation: 2 distributions x (8 agent modes + 3 references) x 1 episode x 2 tasks; adaptation: 5 adapters
    # and 3 references x 3 episodes x 1 network; 10 steps each
    assert budget["steps"] == (2 * 11 * 2 + 8 * 3) * 10 and budget["episodes"] == 2 * 11 + 8 * 3
    assert f"{budget['episodes']} episodes on the bench, {budget['steps']} network-steps" in done.stdout
    assert budget["air_time_s"] == pytest.approx(budget["steps"] * 3 * 2 * 16384 / 2e6)
    assert json.loads((out / "provenance.json").read_text())["bench_budget"] == budget
    measured = summary["bench"]["measured"]
    assert measured["steps"] == budget["steps"] and measured["steps_per_s"] > 0
    assert summary["backends"] == {"train": "sim", "evaluate": "mock"}


def test_the_report_names_backend_radios_calibration_and_sets_sim_beside_bench(bench_run):
    out, _ = bench_run
    results = (out / "results.md").read_text()
    assert "every training in the simulator (backend sim)" in results
    assert "on the bench: backend mock, radios bs0 (mock, bs), bs1 (mock, bs), bs2 (mock, bs), ue0 (mock, ue), " \
           "ue1 (mock, ue)" in results
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["bench"]["calibration"]) == set(BENCH_FOLDERS)
    first = summary["bench"]["calibration"]["evaluate-references/train"]["bs2"]
    assert f"| bs2 | {first['offset_hz']:+.1f} | {first['corrected_hz']:+.1f} |" in results
    assert "Evaluation on the bench (backend mock) on the training distribution" in (out / "table.md").read_text()
    section = results[results.index("side by side (sim-to-real gap)"):]
    sim = summary["bench"]["sim_evaluation"]["test"]["greedy"]["throughput_mbps"]["mean"]
    real = summary["evaluation"]["test"]["greedy"]["throughput_mbps"]["mean"]
    assert "| greedy | " in section and f"{sim:.3g} → {real:.3g} ({real - sim:+.2g})" in section
    assert section.count("| RNN + attention (argmax) |") == 2          # both distributions


def test_a_rerun_redoes_only_what_is_missing(bench_run):
    out, _ = bench_run
    runs = out / "runs"
    shutil.rmtree(runs / "adapt-ppo_scratch-seed0")
    before = stamps(runs)
    again = run_reproduce("--bench", "configs/bench_mock.yaml", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    after = stamps(runs)
    redone = {k for k in after if before.get(k) != after[k]}
    assert redone == {"adapt-ppo_scratch-seed0/metrics.jsonl", "adapt-ppo_scratch-seed0/backend.json"}
    budget = json.loads((out / "summary.json").read_text())["bench"]["budget"]
    assert budget["steps_done"] == budget["steps"] - 3 * 10 and budget["steps_per_s"] > 0
    assert "steps/s measured here before" in again.stdout
    assert len(json.loads((out / "provenance.json").read_text())["previous"]) == 1


def test_twin_trains_on_the_twin(tmp_path):
    recording = twin_bench.record(tmp_path / "rec", 100)
    fit, rec = calibrate(recording)
    twin = write_twin(tmp_path / "twin.yaml", twin_config(fit, rec.config), describe(fit, rec))
    bench = tmp_path / "bench.yaml"
    save_config(twin_bench.config(), bench)
    done = run_reproduce("--bench", str(bench), "--twin", str(twin), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "out" / "runs"
    expected = yaml.safe_load(twin.read_text())
    for agent in AGENTS:
        config, _ = saved(runs / f"train-{agent}-seed0")
        assert config["backend"] == "sim" and config["network"]["task_family"] == "hardware"
        assert config["tasks"]["pa_gain_offset_db"] == expected["tasks"]["pa_gain_offset_db"]
        assert config["network"]["noise_figure_db"] == expected["network"]["noise_figure_db"]
    config, backend = saved(runs / "adapt-maml-seed0")
    assert config["backend"] == "mock" and [r["name"] for r in backend["radios"]] == ["bs0", "bs1", "ue0"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bench"]["twin"]["path"] == str(twin.resolve())
    assert f"on the twin {twin.resolve()}" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--config", "bench_mock"], "run `testbed reproduce --bench bench_mock`"),
    (["--bench", "paper"], "backend sim is no bench"),
    (["--config", "paper", "--twin", "twin.yaml"], "--twin: a twin is trained on for a bench; give --bench"),
])
def test_bad_sources_are_refused_in_one_line(tmp_path, capsys, argv, words):
    assert main(["reproduce", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()        # refused before any folder, any radio


def test_a_twin_of_another_network_is_refused(tmp_path):
    twin = tmp_path / "twin.yaml"
    save_config(load_config("paper"), twin)
    bench = tmp_path / "bench.yaml"
    save_config(twin_bench.config(), bench)
    with pytest.raises(reproduce.RunError, match=r"not the bench's network \(network.num_bs 3 vs 2"):
        reproduce.experiment_configs(str(bench), True, True, str(twin))


@pytest.fixture
def fake_jobs(monkeypatch):
    """Every job replaced by one that logs when it runs; the adaptation's radios fail."""
    log, lock = [], threading.Lock()
    running = {"bench": 0, "most": 0}

    def fake(kind):
        def job(config, *args):
            on_bench = config["backend"] == "mock"
            with lock:
                running["bench"] += on_bench
                running["most"] = max(running["most"], running["bench"])
            time.sleep(0.05)
            with lock:
                running["bench"] -= on_bench
                log.append((kind, config["backend"], args[-1] if kind != "references" else args[2]))
            if kind == "adapt":
                raise BackendFailure("radio backend failed during episode 1: ue1: no answer", Path(args[-1]))
            return "done"
        return job

    for kind in ("train", "references", "evaluate", "adapt", "fixed"):
        monkeypatch.setattr(reproduce, f"_job_{kind}", fake(kind))
    monkeypatch.setattr(reproduce, "_executor", lambda workers, cluster, out: ThreadPool())
    monkeypatch.setattr(reproduce, "_bench_pool", ThreadPool)
    return log, running


def test_bench_jobs_run_one_at_a_time_and_a_failed_radio_stops_only_them(tmp_path, fake_jobs):
    log, running = fake_jobs
    with pytest.raises(reproduce.BenchFailed) as err:
        reproduce.reproduce("configs/bench_mock.yaml", quick=True, num_seeds=2, out_dir=str(tmp_path / "out"),
                            command=["reproduce"], bench=True)
    assert running["most"] == 1                         # never two jobs on the radios at once
    failed = err.value.failed
    assert err.value.job in ("adapt-seed0", "adapt-seed1") and failed[err.value.job].startswith("BackendFailure: ")
    assert "ue1: no answer" in failed[err.value.job]
    assert all(why == f"not run: the bench failed in {err.value.job}" for name, why in failed.items()
               if name != err.value.job)
    assert all(backend == "sim" for kind, backend, _ in log if kind == "train")
    assert sum(kind == "train" for kind, _, _ in log) == 2 * len(AGENTS)     # the simulator's jobs finished
    ran_on_bench = [name for kind, backend, name in log if backend == "mock"]
    assert ran_on_bench.index(str(Path(err.value.out).resolve() / "runs")) == len(ran_on_bench) - 1  # none after
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["outcome"].startswith("BenchFailed") and record["failed_jobs"] == failed


def test_a_radio_failure_crosses_the_process_boundary_intact():
    """A bench job's BackendFailure comes back from its worker process with its message and folder."""
    err = pickle.loads(pickle.dumps(BackendFailure("radio backend failed during episode 2: ue1: no answer", "/x/run")))
    assert isinstance(err, reproduce.BENCH_ERRORS) and str(err).endswith("ue1: no answer")
    assert err.run_dir == Path("/x/run")
