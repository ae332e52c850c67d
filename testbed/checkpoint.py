"""Checkpoints and the metrics log of a run, both safe against a kill at any moment.

A checkpoint holds the agent's name, the resolved config (plain data), the number of finished
episodes, and the agent's state (parameters, optimiser state, random generator, update count).
It is written to a temporary file, flushed to disk and renamed over the old one, so a reader
sees either the old or the new checkpoint, never half of one. It is read with
``torch.load(..., weights_only=True)``: tensors and plain containers only, no pickled code.

``metrics.jsonl`` holds one JSON line per finished episode. On resume, ``truncate_metrics``
keeps the complete lines of the episodes before the checkpoint and drops the rest (a torn last
line, episodes that will be replayed), so every episode ends up with exactly one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours."""


def save_checkpoint(path: Path, agent: str, config: dict, episode: int, state: dict) -> None:
    """Atomically write a checkpoint: ``episode`` finished episodes, agent ``state``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": FORMAT, "agent": agent, "config": config, "episode": episode, "state": state}
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises several types for a corrupt or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a testbed checkpoint (format {FORMAT})")
    return payload


def truncate_metrics(path: Path, num_episodes: int) -> int:
    """Keep the complete lines of episodes ``< num_episodes`` in ``path``; returns how many were kept."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break                       # a line torn by a kill: nothing after it was written
        if row.get("episode", num_episodes) < num_episodes:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return len(kept)


class MetricsLog:
    """Appends one JSON line per episode and flushes it to disk at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fh = open(path, "a")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict]:
    """All complete lines of a metrics log."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
