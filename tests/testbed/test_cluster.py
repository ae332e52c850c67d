"""`testbed reproduce --cluster` on a two-node Ray cluster on 127.0.0.1: the same metrics as a local
run, and a worker node killed mid-run costs nothing but time (its jobs are retried and resume from
their checkpoints, every metrics log stays whole). `testbed sweep --cluster`: the same table as a
local sweep, and a point whose process dies at every attempt is named after its retries.

Ray binds every interface and advertises the host's address, so the cluster runs inside a network
namespace with only loopback: this file is also the helper script the test runs there
(``unshare -n sh -c 'ip link set lo up && python -m tests.testbed.test_cluster PLAIN FAULTY BROKEN'``, or
``... test_cluster sweep PLAIN DYING`` for the sweep).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
REPRODUCE = ["-m", "testbed.cli", "reproduce", "--quick", "--seeds", "1"]
METRICS = ("curves", "final", "references", "adaptation", "test_references", "fixed_task")
TOLERANCE = 1e-9          # relative; same seeds, same code: the numbers agree to float round-off
EPISODES = 8              # quick training episodes (checkpoint every 2)
SWEEP = ["--agent", "ppo", "--episodes", "2", "--num-envs", "2", "--set", "network.episode_steps=10",
         "--set", "evaluation.num_tasks=2", "--grid", "agent.gamma=0.8,0.9", "--eval-episodes", "1"]
DYING = "gamma=0.9-seed0"  # the sweep point whose process dies at every attempt
SWEEP_TIMEOUT_S = 180     # a sweep that takes longer hangs: the tiny one takes seconds


# the helper, run inside the namespace ----------------------------------------------------------
def _ray_node(*args: str) -> subprocess.Popen:
    """A Ray node on 127.0.0.1 with one CPU, in the foreground (``--block``)."""
    return subprocess.Popen(["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _raylet(node: subprocess.Popen) -> int:
    """The PID of the raylet of a node started by ``_ray_node``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pid in _children(node.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except FileNotFoundError:
                pass
        time.sleep(0.2)
    raise RuntimeError("the worker node started no raylet")


def _wait_for_nodes(address: str, count: int) -> None:
    import ray
    ray.init(address=address, log_to_driver=False)
    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) < count:
        assert time.monotonic() < deadline, "the worker node did not join"
        time.sleep(0.2)
    ray.shutdown()


def _job_on(out: Path, raylet: int) -> tuple[str, int] | None:
    """A training running on the node of ``raylet`` with a checkpoint and episodes left: (job, checkpoint episode)."""
    from testbed.checkpoint import load_checkpoint, read_metrics
    for log in (out / "logs").glob("train-*.log"):
        pids = re.findall(r" pid (\d+)", log.read_text())
        run = out / "runs" / log.stem
        if not pids or int(pids[-1]) not in _children(raylet) or not (run / "checkpoints" / "latest.pt").exists():
            continue
        episode = load_checkpoint(run / "checkpoints" / "latest.pt")["episode"]
        if episode >= 2 and len(read_metrics(run / "metrics.jsonl")) < EPISODES - 1:
            return log.stem, episode
    return None


@contextmanager
def _cluster():
    """A head and a worker node on 127.0.0.1 (one CPU each): (address, the nodes' processes; append to it
    to have a node stopped with the others)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")          # short: Ray's socket paths must fit 107 bytes
    nodes = [_ray_node("--head", "--port=0", "--include-dashboard=false", f"--temp-dir={temp}")]
    try:
        marker = Path(temp) / "ray_current_cluster"
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text().strip():
            assert time.monotonic() < deadline and nodes[0].poll() is None, "the head did not start"
            time.sleep(0.2)
        address = marker.read_text().strip()
        nodes.append(_ray_node(f"--address={address}"))
        _wait_for_nodes(address, 2)
        yield address, nodes
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
        shutil.rmtree(temp, ignore_errors=True)


def helper(plain: Path, faulty: Path, broken: Path) -> None:
    """Start the cluster, run ``reproduce`` into ``plain``, then into ``faulty`` killing the worker node
    mid-run (and starting a fresh one), then into ``broken``, whose PPO run folder holds an RNN
    checkpoint; the outcome as JSON on stdout."""
    report = {}
    with _cluster() as (address, nodes):
        cmd = [sys.executable, *REPRODUCE, "--cluster", address]
        clock = time.perf_counter()
        run = subprocess.run([*cmd, "--out", str(plain)], capture_output=True, text=True, env=ONE_THREAD)
        report["plain"] = {"rc": run.returncode, "stderr": run.stderr[-3000:], "wall_s": time.perf_counter() - clock}

        raylet = _raylet(nodes[1])
        proc = subprocess.Popen([*cmd, "--out", str(faulty)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ONE_THREAD)
        deadline = time.monotonic() + 240
        while (found := _job_on(faulty, raylet)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "no training ran on the worker node"
            time.sleep(0.05)
        for pid in [*_children(raylet), raylet]:          # the node's processes: a machine that died
            os.kill(pid, signal.SIGKILL)
        from testbed.checkpoint import load_checkpoint
        at = load_checkpoint(faulty / "runs" / found[0] / "checkpoints" / "latest.pt")["episode"]
        report["killed"] = {"job": found[0], "checkpoint_episode": at}
        nodes.append(_ray_node(f"--address={address}"))   # a replacement node joins
        _, err = proc.communicate(timeout=400)
        report["faulty"] = {"rc": proc.returncode, "stderr": err[-3000:]}

        (broken / "runs" / "train-ppo-seed0" / "checkpoints").mkdir(parents=True)
        shutil.copy(plain / "runs" / "train-rnn-seed0" / "checkpoints" / "latest.pt",
                    broken / "runs" / "train-ppo-seed0" / "checkpoints" / "latest.pt")
        run = subprocess.run([*cmd, "--out", str(broken)], capture_output=True, text=True, env=ONE_THREAD, timeout=300)
        report["broken"] = {"rc": run.returncode, "stderr": run.stderr[-3000:]}
    print(json.dumps(report))


def sweep_helper(plain: Path, dying: Path) -> None:
    """Start the cluster, run the tiny sweep on it into ``plain``, then into ``dying`` with a job whose
    process dies at every attempt for one point (``DYING``); the outcome as JSON on stdout."""
    report = {}
    with _cluster() as (address, _):
        for name, cmd in (("plain", ["-m", "testbed.sweep", *SWEEP, "--cluster", address, "--out", str(plain)]),
                          ("dying", ["-m", "tests.testbed.test_cluster", "dying-sweep", address, str(dying)])):
            clock = time.perf_counter()
            try:
                run = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=ONE_THREAD,
                                     timeout=SWEEP_TIMEOUT_S)
                report[name] = {"rc": run.returncode, "stdout": run.stdout, "stderr": run.stderr}
            except subprocess.TimeoutExpired as err:
                report[name] = {"rc": None, "stdout": "", "stderr": f"hung: {err}"}
            report[name]["wall_s"] = time.perf_counter() - clock
    print(json.dumps(report))


def _dies_for_one_point(job: dict) -> dict:
    """The sweep's job, except that the process of point ``DYING`` ends at once."""
    from testbed.sweep import run_job
    if job["name"] == DYING:
        os._exit(1)
    return run_job(job)


def dying_sweep(address: str, out: Path) -> None:
    """The tiny sweep on the cluster with ``_dies_for_one_point`` as its job; its rows as JSON on stdout."""
    from testbed.sweep import plan, sweep
    jobs = plan("paper", "ppo", [("agent.gamma", [0.8, 0.9])], [("network.episode_steps", 10), ("evaluation.num_tasks", 2)],
                [0], episodes=2, num_envs=2, eval_episodes=1, eval_tasks="train", out=out)
    print(json.dumps(sweep(jobs, out, cluster=address, run=_dies_for_one_point)))


# the test ------------------------------------------------------------------------------------
def _metrics(summary_path: Path) -> dict:
    summary = json.loads(summary_path.read_text())
    return {k: summary[k] for k in METRICS}


def _close(a, b, where: str = "") -> list[str]:
    """Where two nested summaries differ by more than ``TOLERANCE``."""
    if isinstance(a, dict):
        return [d for k in a for d in _close(a[k], b[k], f"{where}.{k}")] if a.keys() == b.keys() else [where]
    if isinstance(a, list):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{where}[{i}]")] \
            if len(a) == len(b) else [where]
    if isinstance(a, float):
        return [] if abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b)) else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _whole_log(path: Path, label: str | None = None) -> list[dict]:
    """The rows of a metrics log, asserting it has no torn line and each episode once (per agent)."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path}: torn last line"
    rows = [json.loads(line) for line in text.splitlines()]
    keys = [(r["agent"], r["episode"]) for r in rows]
    assert len(keys) == len(set(keys)), f"{path}: duplicate episodes"
    for agent in {a for a, _ in keys}:
        assert sorted(e for a, e in keys if a == agent) == list(range(sum(a == agent for a, _ in keys))), path
    return rows


def _science(rows: list[dict]) -> list[dict]:
    """Metrics rows without their timing (``wall_s``, seconds)."""
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def _loopback_namespace_works() -> bool:
    res = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && ip -o addr show lo"],
                         capture_output=True, text=True)
    return res.returncode == 0 and "127.0.0.1" in res.stdout


@pytest.mark.slow
def test_reproduce_on_a_two_node_cluster_matches_a_local_run_and_survives_a_lost_node(tmp_path):
    assert importlib.util.find_spec("ray"), "the test needs the 'cluster' extra: pip install '.[cluster]'"
    assert shutil.which("unshare") and shutil.which("ip"), "the test needs util-linux's unshare and iproute2's ip"
    assert _loopback_namespace_works(), "unshare -n with loopback up failed (the test runs as root)"
    local, plain, faulty, broken = (tmp_path / name for name in ("local", "plain", "faulty", "broken"))

    # the local run, in a process that must not import Ray
    code = ("import sys; from testbed.cli import main; rc = main(sys.argv[1:]); "
            "print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, *REPRODUCE[2:], "--workers", "2", "--out", str(local)],
                         capture_output=True, text=True, env=ONE_THREAD, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("no ray")

    helper_cmd = f"ip link set lo up && exec {sys.executable} -m tests.testbed.test_cluster {plain} {faulty} {broken}"
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", helper_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=ONE_THREAD, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=720)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)            # whatever of the cluster is left: all started here
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])

    assert report["plain"]["rc"] == 0, report["plain"]["stderr"]
    assert _close(_metrics(local / "summary.json"), _metrics(plain / "summary.json")) == []
    plain_summary = json.loads((plain / "summary.json").read_text())
    assert plain_summary["failed_jobs"] == {} and plain_summary["workers"] == 2
    logs = {p.stem for p in (plain / "logs").glob("*.log")}
    assert logs == {"train-ppo-seed0", "train-maml-seed0", "train-rnn-seed0", "train-rnn_attention-seed0",
                    "evaluate-references", "reference-test-seed0", "fixed-ppo-seed0", "evaluate-seed0", "adapt-seed0",
                    "train-ppo_informed-seed0", "evaluate-informed-seed0"}

    assert report["faulty"]["rc"] == 0, report["faulty"]["stderr"]
    assert json.loads((faulty / "summary.json").read_text())["failed_jobs"] == {}
    for path in (faulty / "runs").rglob("metrics.jsonl"):
        _whole_log(path)
    job, at = report["killed"]["job"], report["killed"]["checkpoint_episode"]
    assert (faulty / "logs" / f"{job}.log").read_text().count(f" start {job} ") == 2      # retried once
    resumed = _whole_log(faulty / "runs" / job / "metrics.jsonl")
    untouched = _whole_log(plain / "runs" / job / "metrics.jsonl")
    assert len(resumed) == len(untouched) == EPISODES
    assert _science(resumed[:at]) == _science(untouched[:at])   # the episodes before the checkpoint were kept ...
    assert _science(resumed[at:]) != _science(untouched[at:])   # ... the rest replayed on fresh draws: a resume

    # a job that fails is named in the report, the others finish, the run ends with status 1
    assert report["broken"]["rc"] == 1, report["broken"]["stderr"]
    assert "3 jobs failed: train-ppo-seed0, evaluate-seed0, adapt-seed0" in report["broken"]["stderr"]
    failed = json.loads((broken / "summary.json").read_text())["failed_jobs"]
    assert set(failed) == {"train-ppo-seed0", "evaluate-seed0", "adapt-seed0"}
    assert failed["train-ppo-seed0"].startswith("RunError: ") and "holds a 'rnn' run, not 'ppo'" in failed["train-ppo-seed0"]
    assert "| train-ppo-seed0 | RunError: " in (broken / "results.md").read_text()
    assert (broken / "logs" / "train-ppo-seed0.log").read_text().count(" start train-ppo-seed0 ") == 1  # not retried
    for job in ("train-maml-seed0", "train-rnn-seed0", "train-rnn_attention-seed0"):
        assert len(_whole_log(broken / "runs" / job / "metrics.jsonl")) == EPISODES




def _sweep_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_sweep_on_a_two_node_cluster_matches_a_local_sweep_and_names_a_point_whose_process_keeps_dying(tmp_path):
    assert importlib.util.find_spec("ray"), "the test needs the 'cluster' extra: pip install '.[cluster]'"
    assert _loopback_namespace_works(), "unshare -n with loopback up failed (the test runs as root)"
    local, plain, dying = (tmp_path / name for name in ("local", "plain", "dying"))
    res = subprocess.run([sys.executable, "-m", "testbed.sweep", *SWEEP, "--workers", "2", "--out", str(local)],
                         capture_output=True, text=True, env=ONE_THREAD, cwd=ROOT, timeout=SWEEP_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-3000:]

    helper_cmd = f"ip link set lo up && exec {sys.executable} -m tests.testbed.test_cluster sweep {plain} {dying}"
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", helper_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=ONE_THREAD, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=2 * SWEEP_TIMEOUT_S + 120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])

    # the same points and the same metrics as the local sweep: the same job functions with the same seeds
    # and one torch thread each, so nothing but float round-off may differ (TOLERANCE)
    assert report["plain"]["rc"] == 0, report["plain"]["stderr"][-3000:]
    here, there = _sweep_rows(local / "sweep.csv"), _sweep_rows(plain / "sweep.csv")
    assert [(r["agent.gamma"], r["seed"], r["status"]) for r in here] == [("0.8", "0", "ok"), ("0.9", "0", "ok")]
    assert [(r["agent.gamma"], r["seed"], r["status"]) for r in there] == [("0.8", "0", "ok"), ("0.9", "0", "ok")]
    for a, b in zip(here, there):
        for key in ("train_return", "eval_return", "eval_return_sample"):
            assert _close(float(a[key]), float(b[key])) == [], (key, a, b)
    for point in ("gamma=0.8", "gamma=0.9"):                    # the trials wrote their run folders into --out
        assert len(_whole_log(plain / point / "seed0" / "train" / "metrics.jsonl")) == 2
        assert (plain / point / "seed0" / "eval" / "summary.json").exists()
        assert (plain / "tune" / f"{point}-seed0" / "result.json").exists()   # Ray Tune's trial folder
        assert f" done {point}-seed0" in (plain / "logs" / f"{point}-seed0.log").read_text()

    # a point whose process dies at every attempt: retried, then named as failed; the other point finishes
    dead = report["dying"]
    assert dead["rc"] == 0 and dead["wall_s"] < SWEEP_TIMEOUT_S, dead["stderr"][-3000:]
    rows = {f"gamma={r['agent.gamma']}-seed{r['seed']}": r for r in json.loads(dead["stdout"].strip().splitlines()[-1])}
    assert rows["gamma=0.8-seed0"]["status"] == "ok"
    assert rows[DYING]["status"].startswith("ActorDiedError after 4 attempts"), rows[DYING]
    assert (dying / "logs" / f"{DYING}.log").read_text().count(f" start {DYING} ") == 4   # the first try, 3 retries
    assert f"{DYING}: failed after 4 attempts" in dead["stderr"]                  # the progress display
    assert dead["stderr"].count(f"{DYING}: its worker died; retrying") == 3


if __name__ == "__main__":
    if sys.argv[1] == "sweep":
        sweep_helper(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "dying-sweep":
        dying_sweep(sys.argv[2], Path(sys.argv[3]))
    else:
        helper(*map(Path, sys.argv[1:4]))
