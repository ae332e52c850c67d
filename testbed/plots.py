"""Four-panel plots of the paper's metrics (SINR violations, throughput, latency violations,
Jain's index) against episode: one line per agent with a shaded band, reference policies as
horizontal lines. Agent styles follow the paper's Fig. 3."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.metrics import DISPLAY_NAMES, PAPER_METRICS, TITLES

STYLES = {"ppo": ("tab:purple", "-."), "maml": ("tab:orange", "--"), "rnn": ("gold", ":"),
          "rnn_attention": ("tab:blue", "-"), "ppo_finetune": ("tab:purple", "-."), "ppo_scratch": ("tab:brown", "-")}
REFERENCE_STYLES = (("black", "--"), ("0.5", ":"), ("tab:green", "--"), ("tab:red", ":"))


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    if window <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(series: dict[str, dict[str, tuple]], path: Path, xlabel: str = "episode",
                references: dict[str, dict[str, float]] | None = None, title: str | None = None,
                window: int = 1, marker: str | None = None) -> None:
    """series: label -> metric -> (x [E], mean [E], band [E] or None). references: name -> metric -> value."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, letter, key in zip(axes, "abcd", PAPER_METRICS):
        for label, metrics in series.items():
            x, mean, band = metrics[key]
            color, ls = STYLES.get(label, (None, "-"))
            m = smooth(np.asarray(mean, float), window)
            ax.plot(x, m, ls, color=color, label=DISPLAY_NAMES.get(label, label), lw=1.8, marker=marker, ms=4)
            if band is not None:
                b = smooth(np.asarray(band, float), window)
                ax.fill_between(x, m - b, m + b, color=color, alpha=0.2, lw=0)
        for (name, values), (color, ls) in zip((references or {}).items(), REFERENCE_STYLES):
            ax.axhline(values[key], color=color, lw=1.0, ls=ls, label=name)
        ax.set_title(f"({letter}) {TITLES[key]}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
