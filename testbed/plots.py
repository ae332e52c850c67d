"""Plots of the paper's metrics (SINR violations, throughput, latency violations, Jain's index):
curves against episode (one line per agent, reference policies as horizontal lines), bars per
policy, and the panels of one training run (those four, return, and the agent's update stats).

Bands and error bars are ±1 std clipped to each metric's physical range (``metrics.RANGES``);
x ticks are whole episodes; the legend sits below the panels, never on the data. A quick run's
titles start with ``QUICK_MARK``. Agent styles follow the paper's Fig. 3."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.metrics import DISPLAY_NAMES, PAPER_METRICS, RANGES, TITLES

STYLES = {"ppo": ("tab:purple", "-."), "maml": ("tab:orange", "--"), "rnn": ("gold", ":"),
          "rnn_attention": ("tab:blue", "-"), "ppo_finetune": ("tab:purple", "-."), "ppo_scratch": ("tab:brown", "-")}
REFERENCE_STYLES = (("black", "--"), ("0.5", ":"), ("tab:green", "--"), ("tab:red", ":"))
QUICK_MARK = "QUICK (smoke-test sizes, not results)"
STAT_PREFIX = "losses/"   # the agents' update stats in a metrics line (agents/update.py STATS, MAML's outer loss)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the right number: '1 seed', '3 seeds' (``plural`` where it is not noun + 's')."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def marked(title: str, quick: bool) -> str:
    """``title``, led by ``QUICK_MARK`` for a quick run."""
    return f"{QUICK_MARK}: {title}" if quick else title


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    if window <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def clipped_band(key: str, mean, spread) -> tuple[np.ndarray, np.ndarray]:
    """(mean - spread, mean + spread), clipped to metric ``key``'s physical range."""
    low, high = RANGES.get(key, (None, None))
    mean, spread = np.asarray(mean, float), np.asarray(spread, float)
    lims = (-np.inf if low is None else low, np.inf if high is None else high)
    return np.clip(mean - spread, *lims), np.clip(mean + spread, *lims)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, axes, title: str, episode_axis: bool = True) -> None:
    """Whole-episode x ticks, one legend below the panels (entries of every panel, once each), the title."""
    from matplotlib.ticker import MaxNLocator

    entries = {}
    for ax in axes:
        if episode_axis:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), 8),
                   fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)


def save(fig, path: Path) -> None:
    """Write ``fig`` as a PNG (its title also in the file's Title field) and close it."""
    plt = _pyplot()
    fig.savefig(path, dpi=110, metadata={"Title": fig.get_suptitle()})
    plt.close(fig)


def curves_figure(series: dict[str, dict[str, tuple]], xlabel: str = "episode",
                  references: dict[str, dict[str, float]] | None = None, title: str = "",
                  window: int = 1, marker: str | None = None, quick: bool = False):
    """series: label -> metric -> (x [E], mean [E], spread [E] or None); a spread is drawn as a
    band mean ± spread clipped to the metric's range. references: name -> metric -> value.
    Mean and spread are moving averages over ``window`` points."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6), layout="constrained")
    for ax, letter, key in zip(axes, "abcd", PAPER_METRICS):
        for label, metrics in series.items():
            x, mean, spread = metrics[key]
            color, ls = STYLES.get(label, (None, "-"))
            m = smooth(np.asarray(mean, float), window)
            line, = ax.plot(x, m, ls, color=color, label=DISPLAY_NAMES.get(label, label), lw=1.8, marker=marker, ms=4)
            if spread is not None:
                ax.fill_between(x, *clipped_band(key, m, smooth(np.asarray(spread, float), window)),
                                color=line.get_color(), alpha=0.2, lw=0)
        for (name, values), (color, ls) in zip((references or {}).items(), REFERENCE_STYLES):
            ax.axhline(values[key], color=color, lw=1.0, ls=ls, label=name)
        ax.set_title(f"({letter}) {TITLES[key]}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    _finish(fig, axes, marked(title, quick))
    return fig


def plot_curves(series: dict[str, dict[str, tuple]], path: Path, xlabel: str = "episode",
                references: dict[str, dict[str, float]] | None = None, title: str = "",
                window: int = 1, marker: str | None = None, quick: bool = False) -> None:
    """``curves_figure`` written to ``path``."""
    save(curves_figure(series, xlabel, references, title, window, marker, quick), path)


def bars_figure(summary: dict[str, dict], title: str):
    """One bar per policy and panel: summary: name -> metric -> {'mean', 'std'}; error bars ±1 std,
    clipped to the metric's range (none where every std is 0)."""
    plt = _pyplot()
    names = list(summary)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), layout="constrained")
    for ax, key in zip(axes, PAPER_METRICS):
        mean = np.array([summary[n][key]["mean"] for n in names])
        std = np.array([summary[n][key]["std"] for n in names])
        lo, hi = clipped_band(key, mean, std)
        yerr = np.stack([mean - lo, hi - mean]) if std.any() else None
        ax.bar([DISPLAY_NAMES.get(n, n) for n in names], mean, yerr=yerr, color="tab:blue", capsize=3)
        ax.set_title(TITLES[key])
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    _finish(fig, axes, title, episode_axis=False)
    return fig


def plot_bars(summary: dict[str, dict], path: Path, title: str) -> None:
    """``bars_figure`` written to ``path``."""
    save(bars_figure(summary, title), path)


def training_figure(rows: list[dict], label: str, quick: bool = False):
    """Panels of one run folder's metrics lines (at least one) against episode: the paper's four
    metrics, return (band ±1 std over the env lanes where ``return_std`` is logged) and every update
    stat present, at the episodes that logged it."""
    plt = _pyplot()
    stats = list(dict.fromkeys(k for r in rows for k in r if k.startswith(STAT_PREFIX)))
    keys = [*PAPER_METRICS, "return", *stats]
    ncols = 4
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(17, 3.3 * nrows + 1.0), layout="constrained", squeeze=False)
    axes = axes.ravel()
    color, _ = STYLES.get(label, ("tab:blue", "-"))
    updates = max((sum(1 for r in rows if k in r) for k in stats), default=0)
    windows = {"episode": max(1, len(rows) // 50), "update": max(1, updates // 50)}   # moving average, in points
    for ax, key in zip(axes, keys):
        x, y = (np.array(v, float) for v in zip(*[(r["episode"], r[key]) for r in rows if key in r]))
        unit = "update" if key in stats else "episode"
        window = windows[unit]
        ax.plot(x, y, color=color, lw=0.8, alpha=0.4 if window > 1 else 1.0, marker="o" if len(y) <= 30 else None,
                ms=3, label="per update" if unit == "update" else "per episode (mean over the env lanes)")
        if window > 1:
            ax.plot(x, smooth(y, window), color=color, lw=1.8, label="moving average")
        if key == "return" and all("return_std" in r for r in rows):
            ax.fill_between(x, *clipped_band(key, y, [r["return_std"] for r in rows]), color=color, alpha=0.15,
                            lw=0, label="±1 std over the env lanes")
        ax.set_title(TITLES.get(key, key))
        ax.set_xlabel("episode")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    spans = [count(w, unit) for unit, w in windows.items() if w > 1]
    smoothing = f"; moving average over {' / '.join(spans)}" if spans else ""
    logged = (f"update stats at the {count(updates, 'episode')} that ended with an update" if stats
              else "no update stats logged")
    title = (f"{DISPLAY_NAMES.get(label, label)}: {count(len(rows), 'episode')}; metrics are each episode's mean "
             f"over the env lanes; {logged}{smoothing}")
    _finish(fig, axes[:len(keys)], marked(title, quick))
    return fig


def plot_training_run(rows: list[dict], path: Path, label: str, quick: bool = False) -> None:
    """``training_figure`` of a run folder's metrics lines written to ``path`` (e.g. plots/curves.png)."""
    save(training_figure(rows, label, quick), path)
