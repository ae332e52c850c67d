"""Optional experiment tracking: ``--track tensorboard`` writes each episode's metrics line as
TensorBoard scalars into ``<run_dir>/tensorboard/``, with CleanRL's tag prefixes:
``charts/`` (episodic return, the paper's metrics, ``charts/SPS`` samples per second) and
``losses/`` (the agents' update statistics). The x axis is the number of env samples.
tensorboard is imported only when tracking is asked for (extra ``track``)."""
from __future__ import annotations

from pathlib import Path

from testbed.metrics import METRIC_KEYS

TRACKERS = ("tensorboard",)
# agents' stat keys -> CleanRL's names; other "losses/..." keys keep theirs
LOSS_NAMES = {"losses/policy": "losses/policy_loss", "losses/value": "losses/value_loss",
              "losses/outer": "losses/outer_loss"}


class TrackingError(RuntimeError):
    """The tracker asked for cannot run (its package is missing)."""


class TensorBoard:
    """Scalars of one run; ``purge_step`` drops events at or after it (a resumed run replays them)."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise TrackingError(f"--track tensorboard needs tensorboard ({err}); "
                                f"install it with: pip install 'spectrum-testbed[track]'") from err
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)
        self.first_episode = None

    def log(self, row: dict) -> None:
        """One metrics line of ``runner.play`` (keys ``episode``, ``samples``, ``wall_s``, metrics, losses)."""
        step = row["samples"]
        if self.first_episode is None:
            self.first_episode = row["episode"]
        self.writer.add_scalar("charts/episodic_return", row["return"], step)
        for key in METRIC_KEYS:
            if key != "return":
                self.writer.add_scalar(f"charts/{key}", row[key], step)
        per_episode = step / (row["episode"] + 1)
        played = row["episode"] + 1 - self.first_episode
        if row["wall_s"] > 0:
            self.writer.add_scalar("charts/SPS", played * per_episode / row["wall_s"], step)
        for key, value in row.items():
            if key.startswith("losses/"):
                self.writer.add_scalar(LOSS_NAMES.get(key, key), value, step)

    def close(self) -> None:
        self.writer.close()


def open_tracker(kind: str | None, run_dir: Path, purge_step: int | None = None) -> TensorBoard | None:
    """The tracker ``kind`` (one of ``TRACKERS``) for ``run_dir``, or None without tracking."""
    if kind is None:
        return None
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker {kind!r}; choose from {list(TRACKERS)}")
    return TensorBoard(run_dir, purge_step)
