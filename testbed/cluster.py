"""`testbed reproduce --cluster`: the jobs of a reproduction as Ray tasks (extra 'cluster', ray==2.60.0);
``connect`` and ``logged`` also serve `testbed sweep --cluster`, whose jobs are Ray Tune trials.

Every job is one task on one CPU of any node. A task whose worker process dies (its node lost,
the process killed) is retried up to ``MAX_RETRIES`` times and resumes from its run folder's
checkpoint; an error the job raises is not retried, it fails the job at once. A job's output goes
to ``<results folder>/logs/<job>.log`` (one ``start`` line per attempt). The results folder must
be on storage every node reaches under the same path: the jobs write their run folders there.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from concurrent.futures import Future
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from testbed.agent_factory import RunError

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as err:       # the module is only imported for --cluster
    raise RunError("--cluster needs Ray: install the 'cluster' extra (pip install \".[cluster]\")") from err

MAX_RETRIES = 3                  # attempts after the first when a worker dies
CONNECT_TIMEOUT_S = 5.0


def logged(name: str, log: str, job, *args):
    """Run ``job(*args)`` with its output appended to the file ``log``, after a ``start`` line naming
    the node and the process (one per attempt)."""
    with open(log, "a") as fh, redirect_stdout(fh), redirect_stderr(fh):
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} start {name} on node {ray.get_runtime_context().get_node_id()} "
              f"pid {os.getpid()}", flush=True)
        try:
            result = job(*args)
        except BaseException:
            traceback.print_exc()
            raise
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} done {name}", flush=True)
    return result


_task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(logged)


def describe(err: BaseException) -> str:
    """One line on why a job failed: the job's own error, or the worker's death."""
    if isinstance(err, RayTaskError):
        cause = err.cause if err.cause is not None else err
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return f"{type(err).__name__} after {MAX_RETRIES + 1} attempts: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def connect(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` ('auto' or HOST:PORT of its head), or raise
    ``RunError`` in one line; ``ray.shutdown()`` disconnects."""
    if address != "auto":           # Ray itself retries a silent address for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise RunError(f"--cluster {address}: no Ray head answers there ({err}); start one with "
                           f"`ray start --head` (docs/cluster.md)") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RunError(f"--cluster {address}: cannot connect to a Ray cluster there ({err})") from None


class Cluster:
    """A connection to a running Ray cluster that takes the jobs of one results folder."""

    job_errors = (RayError,)     # a job that raised them is reported as failed, the run goes on
    describe = staticmethod(describe)

    def __init__(self, address: str, out: Path):
        connect(address)
        self.logs = Path(out) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.refs: dict[Future, ray.ObjectRef] = {}
        self.workers = int(ray.cluster_resources().get("CPU", 0))

    def submit(self, name: str, job, *args) -> Future:
        """Start ``job(*args)`` as the task ``name``; its future."""
        ref = _task.options(name=name).remote(name, str(self.logs / f"{name}.log"), job, *args)
        fut = ref.future()
        self.refs[fut] = ref
        return fut

    def running(self, pending) -> int:
        """How many of the ``pending`` jobs hold a CPU now (the rest wait for one)."""
        busy = ray.cluster_resources().get("CPU", 0) - ray.available_resources().get("CPU", 0)
        return min(len(pending), max(0, round(busy)))

    def stop(self, pending) -> None:
        """Cancel the ``pending`` jobs (a running one stops at once; its last checkpoint stays)."""
        for fut in pending:
            ray.cancel(self.refs[fut])

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        ray.shutdown()
