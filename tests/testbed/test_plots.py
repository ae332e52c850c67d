"""Plots and reports that do not mislead: bands and error bars inside each metric's physical range,
whole-episode ticks, the legend off the data, QUICK on a quick run's every figure and table, no
verdicts from a quick run, '± n/a' for one seed, signed changes in words, training-run panels."""
import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from PIL import Image

from testbed import policies
from testbed.agent_factory import AGENTS
from testbed.config import load_config, to_dict
from testbed.demo import averaged, format_table
from testbed.metrics import METRIC_KEYS, PAPER_METRICS, TITLES
from testbed.plots import QUICK_MARK, bars_figure, curves_figure, plot_training_run, training_figure
from testbed.report import write_outputs
from testbed.reproduce import ADAPTERS

matplotlib.use("Agg")

WIDE = {"sinr_violations": (0.1, 0.5), "throughput_mbps": (1.0, 3.0), "latency_violations": (0.2, 0.9),
        "fairness": (0.9, 0.5), "blocked_unsafe": (0.0, 2.0), "executed_violations": (0.0, 0.0),
        "return": (0.5, 4.0)}   # metric -> (mean, std): a spread that crosses the metric's physical range


def band_ys(ax) -> np.ndarray:
    """y of every vertex of the shaded bands on ``ax``."""
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert polys, "no band drawn"
    return np.concatenate([p.vertices[:, 1] for c in polys for p in c.get_paths()])


def wide_series(length: int = 3) -> dict:
    x = np.arange(length)
    return {"ppo": {k: (x, np.full(length, WIDE[k][0]), np.full(length, WIDE[k][1])) for k in PAPER_METRICS}}


def test_bands_stay_inside_each_metrics_physical_range():
    fig = curves_figure(wide_series(), title="t")
    sinr, tput, latency, jain = fig.axes[:4]
    assert band_ys(sinr).min() == pytest.approx(0.0) and band_ys(sinr).max() == pytest.approx(0.6)
    assert band_ys(tput).min() >= 0.0 and band_ys(latency).min() >= 0.0
    assert band_ys(jain).max() == pytest.approx(1.0) and band_ys(jain).min() == pytest.approx(0.4)


def test_bar_error_bars_stay_inside_each_metrics_physical_range():
    summary = {name: {k: {"mean": m, "std": s} for k, (m, s) in WIDE.items()} for name in ("random", "oracle")}
    fig = bars_figure(summary, "t")
    for ax, key in zip(fig.axes, PAPER_METRICS):
        (errorbars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        ys = np.concatenate([seg[:, 1] for seg in errorbars.lines[2][0].get_segments()])
        low, high = (0.0, 1.0) if key == "fairness" else (0.0, np.inf)
        assert ys.min() == pytest.approx(max(low, WIDE[key][0] - WIDE[key][1])), key
        assert ys.max() == pytest.approx(min(high, WIDE[key][0] + WIDE[key][1])), key


def test_episode_ticks_are_whole_and_the_legend_is_off_every_panel():
    references = {"per-band oracle": {k: 0.5 for k in PAPER_METRICS}}
    for fig in (curves_figure(wide_series(3), references=references, title="t"),
                training_figure(training_rows(3), "ppo")):
        fig.canvas.draw()
        (legend,) = fig.legends
        box = legend.get_window_extent()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            assert ax.get_legend() is None
            assert not box.overlaps(ax.get_window_extent())
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def training_rows(episodes: int = 6) -> list[dict]:
    """Metrics lines as runner.play writes them; PPO's update stats on every second episode."""
    rows = []
    for e in range(episodes):
        row = {"episode": e, "agent": "ppo", "seed": 0, **{k: WIDE[k][0] + e for k in METRIC_KEYS},
               "return_std": 4.0, "samples": 80 * (e + 1), "wall_s": 0.1 * e}
        if e % 2:
            row.update({"losses/policy": -0.07 + e, "losses/value": 10.0 - e})
        rows.append(row)
    return rows


def test_training_run_plot_draws_return_and_the_losses_present(tmp_path):
    rows = training_rows()
    fig = training_figure(rows, "ppo", quick=True)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {*(TITLES[k] for k in PAPER_METRICS), TITLES["return"], TITLES["losses/policy"],
                           TITLES["losses/value"]}
    assert list(panels[TITLES["losses/value"]].lines[0].get_ydata()) == [9.0, 7.0, 5.0]
    assert list(panels[TITLES["losses/value"]].lines[0].get_xdata()) == [1.0, 3.0, 5.0]
    assert band_ys(panels[TITLES["return"]]).min() == pytest.approx(0.5 - 4.0)   # return is unbounded
    assert fig.get_suptitle().startswith(QUICK_MARK) and "6 episodes" in fig.get_suptitle()
    assert "3 episodes that ended with an update" in fig.get_suptitle()
    plot_training_run(rows, tmp_path / "curves.png", "ppo")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def summary(quick: bool, seeds: int, changes: dict[str, float] | None = None) -> dict:
    """A reproduction summary as ``reproduce.collect`` returns it; agent a's SINR violations are
    PPO's × (1 + changes[a])."""
    def stat(key: str) -> dict:
        return {"mean": WIDE[key][0] + 0.1, "std": 0.0 if seeds == 1 else 0.05}

    episodes, points = 4, [0, 1, 2]
    final = {a: {k: stat(k) for k in METRIC_KEYS} for a in AGENTS}
    for agent, c in (changes or {}).items():
        final[agent]["sinr_violations"]["mean"] = final["ppo"]["sinr_violations"]["mean"] * (1 + c)
    evaluation = {d: {**{f"{a}/{m}": final[a] for a in AGENTS for m in ("argmax", "sample")},
                      **{n: {k: stat(k) for k in METRIC_KEYS} for n in policies.NAMES}} for d in ("train", "test")}
    return {"config": to_dict(load_config()), "quick": quick, "seeds": seeds, "workers": 1, "wall_s": 60.0,
            "backends": {"train": "sim", "evaluate": "sim"}, "bench": None,
            "train_episodes": episodes, "tail_episodes": 1, "num_envs": 4, "adapt_num_envs": 4,
            "curves": {a: {k: {"mean": [WIDE[k][0]] * episodes, "std": [WIDE[k][1]] * episodes} for k in METRIC_KEYS}
                       for a in AGENTS},
            "final": final, "references": list(policies.NAMES), "evaluation": evaluation,
            "evaluation_set": {"num_tasks": 4, "episodes": 2, "seed": 0},
            "adaptation": {a: {str(p): {k: stat(k) for k in METRIC_KEYS} for p in points} for a in ADAPTERS},
            "test_references": {n: {k: stat(k) for k in METRIC_KEYS} for n in policies.NAMES},
            "adapt_points": points, "informed": None, "adaptation_fractions": {}, "samples_to_reach": None,
            "fixed_task": [{"seed": s, "ppo_mbps": 100.0, "oracle_mbps": 200.0, "fraction": 0.5} for s in range(seeds)]}


def headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(("#", "**"))]


def test_a_quick_run_is_marked_everywhere_and_judges_no_claims(tmp_path):
    write_outputs(tmp_path, summary(quick=True, seeds=1))
    for name in ("fig3.png", "adaptation.png"):
        assert Image.open(tmp_path / name).text["Title"].startswith(QUICK_MARK), name
    for name in ("table.md", "adaptation.md", "results.md"):
        heads = headings((tmp_path / name).read_text())
        assert heads and all(QUICK_MARK in h for h in heads), name
    results = (tmp_path / "results.md").read_text()
    assert "too small to judge the paper's claims" in results
    assert "holds" not in results and "does not hold" not in results


def test_one_seed_has_no_spread_and_a_full_run_judges_the_claims(tmp_path):
    write_outputs(tmp_path, summary(quick=False, seeds=1))
    table = (tmp_path / "table.md").read_text()
    assert "± n/a" in table and "± 0" not in table and "1 seed" in table and "1 seeds" not in table
    assert "± 0" not in (tmp_path / "adaptation.md").read_text()
    assert "no spread" in Image.open(tmp_path / "fig3.png").text["Title"]
    assert "1 seeds" not in Image.open(tmp_path / "fig3.png").text["Title"]
    results = (tmp_path / "results.md").read_text()
    assert QUICK_MARK not in results and "holds" in results


def test_three_seeds_show_their_spread(tmp_path):
    write_outputs(tmp_path, summary(quick=False, seeds=3))
    assert "| PPO (argmax) | 0.2 ± 0.05 |" in (tmp_path / "table.md").read_text()
    assert "±1 std over the 3 seeds, clipped" in Image.open(tmp_path / "fig3.png").text["Title"]


def test_changes_against_ppo_carry_their_sign_and_their_direction_in_words(tmp_path):
    write_outputs(tmp_path, summary(quick=False, seeds=3, changes={"maml": 0.76, "rnn": -0.6, "rnn_attention": -0.7}))
    (line,) = [x for x in (tmp_path / "results.md").read_text().splitlines() if "cut SINR violations" in x]
    assert "change vs PPO, − = fewer violations, + = more" in line
    assert "MAML +76 % (more violations)" in line and "RNN (RL²) −60 % (fewer violations)" in line
    assert "does not hold" in line   # one meta-learner has more violations than PPO
    write_outputs(tmp_path, summary(quick=False, seeds=3, changes={"maml": -0.5, "rnn": -0.6, "rnn_attention": -0.7}))
    (line,) = [x for x in (tmp_path / "results.md").read_text().splitlines() if "cut SINR violations" in x]
    assert ": holds" in line and "MAML −50 % (fewer violations)" in line


def test_demo_table_says_what_it_averages():
    stats = {n: {k: {"mean": 1.0, "std": 0.0} for k in METRIC_KEYS} for n in ("random", "oracle")}
    assert "± n/a" in format_table(stats, samples=1) and "± 0" in format_table(stats, samples=8)
    assert averaged(2, 16) == "mean ± std over 2 episodes × 16 networks = 32 network-episodes per policy"
    assert averaged(1, 1) == "mean ± std over 1 episode × 1 network = 1 network-episode per policy"
