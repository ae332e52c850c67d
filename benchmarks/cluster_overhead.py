"""`testbed reproduce --quick --seeds 1` locally (--workers 2) against a two-node Ray cluster on
127.0.0.1 (one CPU per node, so the same two jobs at a time), and Ray's scheduling overhead per job:
the round trip of a job that does nothing through the same task wrapper (``testbed.cluster``), one
at a time (latency) and 200 at once (throughput). Prints one JSON line; times in seconds.

Ray binds every interface, so the script re-runs itself in a network namespace with only loopback
(``unshare -n``, as root): usage: python benchmarks/cluster_overhead.py [--noop-jobs 200]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSIDE = "CLUSTER_OVERHEAD_IN_NAMESPACE"
REPRODUCE = [sys.executable, "-m", "testbed.cli", "reproduce", "--quick", "--seeds", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", INSIDE: "1"}


def noop() -> None:
    """A job that does nothing: what is left of its round trip is scheduling."""


def node(*args: str) -> subprocess.Popen:
    """A Ray node on 127.0.0.1 with one CPU, in the foreground."""
    return subprocess.Popen(["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(cmd: list[str]) -> float:
    clock = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - clock


def overhead(address: str, out: Path, jobs: int) -> dict:
    """Latency of one no-op job at a time, and throughput of ``jobs`` no-op jobs at once."""
    from testbed.cluster import Cluster
    clock = time.perf_counter()
    with Cluster(address, out) as cluster:
        connect = time.perf_counter() - clock
        cluster.submit("warm-up", noop).result()
        latencies = []
        for i in range(20):
            clock = time.perf_counter()
            cluster.submit(f"noop-{i}", noop).result()
            latencies.append(time.perf_counter() - clock)
        clock = time.perf_counter()
        for fut in [cluster.submit(f"noop-{i}", noop) for i in range(jobs)]:
            fut.result()
        batch = time.perf_counter() - clock
    latencies.sort()
    return {"connect_s": connect, "noop_latency_median_s": latencies[len(latencies) // 2],
            "noop_jobs": jobs, "noop_jobs_per_s": jobs / batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--noop-jobs", type=int, default=200)
    args = parser.parse_args()
    if os.environ.get(INSIDE) != "1":
        here = " ".join([sys.executable, str(Path(__file__).resolve()), "--noop-jobs", str(args.noop_jobs)])
        sys.exit(subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {here}"], env=ENV).returncode)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")           # short: Ray's socket paths must fit 107 bytes
    work = Path(tempfile.mkdtemp(prefix="cluster-overhead-"))
    local = timed([*REPRODUCE, "--workers", "2", "--out", str(work / "local")])
    nodes = [node("--head", "--port=0", "--include-dashboard=false", f"--temp-dir={temp}")]
    try:
        clock = time.perf_counter()
        marker = Path(temp) / "ray_current_cluster"
        while not marker.exists() or not marker.read_text().strip():
            time.sleep(0.1)
        address = marker.read_text().strip()
        nodes.append(node(f"--address={address}"))
        import ray
        ray.init(address=address, log_to_driver=False)
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            time.sleep(0.1)
        ray.shutdown()
        start = time.perf_counter() - clock
        cluster = timed([*REPRODUCE, "--cluster", address, "--out", str(work / "cluster")])
        result = overhead(address, work / "noop", args.noop_jobs)
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait(timeout=60)
    jobs = 8        # one seed: 4 trainings, 2 reference runs, the fixed-task run, the adaptations
    print(json.dumps({"reproduce_quick_local_s": round(local, 1), "reproduce_quick_cluster_s": round(cluster, 1),
                      "cluster_start_s": round(start, 1), "jobs": jobs,
                      "wall_difference_per_job_s": round((cluster - local) / jobs, 2),
                      **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}}))


if __name__ == "__main__":
    main()
