"""Checkpoints and the metrics log of a run, both safe against a kill at any moment.

A checkpoint holds the agent's name, the resolved config (plain data), the number of finished
episodes, and the agent's state (parameters, optimiser state, random generator, update count).
It is written to a temporary file, flushed to disk and renamed over the old one, so a reader
sees either the old or the new checkpoint, never half of one. It is read with
``torch.load(..., weights_only=True)``: tensors and plain containers only, no pickled code.

``metrics.jsonl`` holds one JSON object per line, one line per finished episode. On resume,
``truncate_metrics`` keeps the lines of the episodes before the checkpoint and drops the rest
(a last line torn by a kill, episodes that will be replayed), so every episode ends up with
exactly one line. Any other line that is not a JSON object is an error naming the file and line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FORMAT = 1


class CheckpointError(RuntimeError):
    """A run file (checkpoint, metrics log) is missing, unreadable or not one of ours."""


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
    for key, kind in (("agent", str), ("config", dict), ("episode", int), ("state", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: not a complete testbed checkpoint: {key!r} is missing or not a {kind.__name__}")
    return payload


def _rows(path: Path) -> list[tuple[int, str, dict]]:
    """(line number, line, object) of every complete line; a last line torn by a kill (no newline
    at its end) is left out, any other line that is not a JSON object raises ``CheckpointError``."""
    text = Path(path).read_text()
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):     # no newline after it: torn by a kill
                break
            row = None
        if not isinstance(row, dict):
            raise CheckpointError(f"{path}:{number}: not a JSON object: {line[:60]!r}")
        rows.append((number, line, row))
    return rows


def truncate_metrics(path: Path, num_episodes: int) -> int:
    """Keep the complete lines of episodes ``< num_episodes`` in ``path``; returns how many were kept."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for number, line, row in _rows(path):
        episode = row.get("episode")
        if isinstance(episode, bool) or not isinstance(episode, int):
            raise CheckpointError(f"{path}:{number}: no integer 'episode' in {line[:60]!r}")
        if episode < num_episodes:
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
    """The rows of a metrics log (a last line torn by a kill left out)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no metrics log at {path}")
    return [row for _, _, row in _rows(path)]
