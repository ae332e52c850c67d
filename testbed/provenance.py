"""``provenance.json`` of a run folder: what ran, from which code, where and when.

One record per invocation: the command line, git revision of the project's checkout and whether
its tree was dirty ("unknown" outside a checkout), package versions, Python version, host, torch
device, start and end time (ISO 8601, local time with its UTC offset), the outcome, for a run
that starts from a checkpoint its path and sha256, and what the caller adds (``recorded(**fields)``).
It is written when the run starts (``end`` null, outcome "running") and again when it ends; a
resumed run keeps the records of the earlier invocations under ``previous``, oldest first.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
PACKAGES = ("spectrum-testbed", "torch", "numpy", "gymnasium")
FILENAME = "provenance.json"


def now() -> str:
    """The local time, ISO 8601 with the UTC offset, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """Revision of the project's checkout and whether its tree differs from it ("unknown" when not a checkout)."""
    revision = _git("rev-parse", "HEAD")
    if revision is None:
        return {"revision": "unknown", "dirty": "unknown"}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"revision": revision, "dirty": "unknown" if status is None else bool(status)}


def versions() -> dict:
    """Installed versions of the project and the libraries its results depend on."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(device: str) -> str:
    """What a torch device string stands for: the GPU's name, or the CPU."""
    if device.startswith("cuda"):
        import torch
        try:
            return torch.cuda.get_device_name(torch.device(device))
        except (RuntimeError, AssertionError) as err:
            return f"unavailable ({err})"
    return platform.processor() or platform.machine() or "cpu"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect(command: list[str] | None, device: str, checkpoint: Path | None = None) -> dict:
    """The record of a run about to start: ``command`` (the arguments after ``testbed``; None: this
    process's), the torch ``device``, and the ``checkpoint`` it starts from, if any."""
    command = sys.argv[1:] if command is None else command
    record = {
        "command": shlex.join(["testbed", *command]),
        "argv": list(command),
        "cwd": os.getcwd(),
        "start": now(),
        "end": None,
        "outcome": "running",
        "git": git_state(),
        "versions": versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "device": device,
        "device_name": device_name(device),
    }
    if checkpoint is not None:
        record["checkpoint"] = {"path": str(Path(checkpoint).resolve()), "sha256": sha256(checkpoint)}
    return record


def start(run_dir: Path, record: dict) -> None:
    """Write ``record`` as the run folder's current one; the earlier invocations' records go under ``previous``."""
    path = Path(run_dir) / FILENAME
    previous = []
    if path.exists():
        text = path.read_text()
        try:
            old = json.loads(text)
        except json.JSONDecodeError:
            old = {"unreadable": text}
        previous = old.pop("previous", []) + [old] if isinstance(old, dict) else [{"unreadable": text}]
    record["previous"] = previous
    _write(path, record)


def finish(run_dir: Path, record: dict, outcome: str) -> None:
    """Record the end time and ``outcome`` ("finished", or what stopped the run)."""
    record.update(end=now(), outcome=outcome)
    _write(Path(run_dir) / FILENAME, record)


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def recorded(run_dir: Path, command: list[str] | None, device: str, checkpoint: Path | None = None, **fields):
    """``provenance.json`` written as the block starts and again with its outcome as it ends; ``fields``
    (plain data, such as a reproduction's bench budget) are part of the record from the start."""
    record = {**collect(command, device, checkpoint), **fields}
    start(run_dir, record)
    try:
        yield record
    except BaseException as err:
        finish(run_dir, record, f"{type(err).__name__}: {err}")
        raise
    finish(run_dir, record, "finished")
