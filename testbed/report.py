"""The results of `testbed reproduce`, from the summary of its run folders: ``summary.json``,
``curves.csv`` and ``fig3.png`` (training curves), ``table.md`` (end of training, and as fractions
of the oracle), ``adaptation.csv/.md/.png`` and ``results.md`` (with the paper's claims checked). Every caption
and heading says what its numbers average; one seed shows no spread ('± n/a'); a quick run's
figures and tables are marked QUICK and its results.md judges none of the claims."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testbed.agent_factory import AGENTS
from testbed.metrics import DISPLAY_NAMES, HEADERS, METRIC_KEYS, PAPER_METRICS, TABLE_KEYS
from testbed.plots import count, marked, plot_curves


def _fmt(stat: dict, seeds: int) -> str:
    """mean ± std over seeds; '± n/a' for one seed (a std over one value is no spread)."""
    return f"{stat['mean']:.3g} ± " + ("n/a" if seeds == 1 else f"{stat['std']:.2g}")


def _fraction(value: float, oracle: float) -> str:
    return "—" if abs(oracle) < 1e-12 else f"{value / oracle:.2f}"


def _band(seeds: int) -> str:
    """What a figure's band shows."""
    if seeds == 1:
        return "one seed: no spread over seeds shown"
    return f"band ±1 std over the {count(seeds, 'seed')}, clipped to each metric's physical range"


def _plus_minus(seeds: int) -> str:
    """What a table's ± shows."""
    return "one seed, so no spread: ± n/a" if seeds == 1 else f"± is the std over the {count(seeds, 'seed')}"


def _spread(std, seeds: int):
    """The band of a curve: its std over seeds, none for one seed."""
    return std if seeds > 1 else None


def _averaged(summary: dict) -> str:
    """What one number of the end-of-training table averages."""
    seeds = summary["seeds"]
    return (f"per seed, the mean over its last {count(summary['tail_episodes'], 'training episode')} × "
            f"{count(summary['num_envs'], 'network')}; reference policies: per seed, the mean over their "
            f"evaluation episodes × networks; then mean ± std over {count(seeds, 'seed')} ({_plus_minus(seeds)})")


def markdown_table(rows: dict[str, dict], oracle: dict, seeds: int, heading: str) -> str:
    """``heading``, mean ± std over seeds, then each metric as a fraction of the oracle's."""
    head = "| | " + " | ".join(HEADERS[c] for c in TABLE_KEYS) + " |"
    lines = [f"**{heading}**", "", head, "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {DISPLAY_NAMES.get(name, name)} | "
                     + " | ".join(_fmt(stats[c], seeds) for c in TABLE_KEYS) + " |")
    lines += ["", "Fraction of the per-band oracle (agent mean / oracle mean; — where the oracle's mean is 0):", "",
              head, "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {DISPLAY_NAMES.get(name, name)} | " + " | ".join(
            _fraction(stats[c]["mean"], oracle[c]["mean"]) for c in TABLE_KEYS) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict) -> None:
    """Every output file of a reproduction in ``out``, from the summary ``collect`` returns."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    quick, seeds, networks = summary["quick"], summary["seeds"], count(summary["num_envs"], "network")
    curves = summary["curves"]
    length = len(curves[AGENTS[0]]["return"]["mean"])
    x = np.arange(length)
    with open(out / "curves.csv", "w") as fh:
        fh.write("agent,episode," + ",".join(f"{k}_mean,{k}_std" for k in METRIC_KEYS) + "\n")
        for agent in AGENTS:
            for e in range(len(curves[agent]["return"]["mean"])):
                cells = [f"{curves[agent][k]['mean'][e]:.6g},{curves[agent][k]['std'][e]:.6g}" for k in METRIC_KEYS]
                fh.write(f"{agent},{e}," + ",".join(cells) + "\n")
    series = {a: {k: (x[:len(curves[a][k]["mean"])], curves[a][k]["mean"], _spread(curves[a][k]["std"], seeds))
                  for k in PAPER_METRICS} for a in AGENTS}
    refs = {DISPLAY_NAMES[n]: {k: summary["references"][n][k]["mean"] for k in PAPER_METRICS}
            for n in ("oracle", "random")}
    window = max(1, length // 24)
    smoothing = f"moving average over {count(window, 'episode')}" if window > 1 else "no smoothing"
    plot_curves(series, out / "fig3.png", references=refs, window=window, quick=quick,
                title=f"Training on the task stream. Per episode: mean over {networks}, then over "
                      f"{count(seeds, 'seed')}; {_band(seeds)}; {smoothing}.\n"
                      "Horizontal lines: reference policies on the same task distribution (mean over seeds).")
    rows = {**summary["final"], **summary["references"]}
    table = markdown_table(rows, summary["references"]["oracle"], seeds,
                           marked(f"End of training (training task distribution): {_averaged(summary)}", quick))
    (out / "table.md").write_text(table + "\n")

    adaptation = summary["adaptation"]
    points = summary["adapt_points"]
    with open(out / "adaptation.csv", "w") as fh:
        fh.write("agent,adaptation_episodes," + ",".join(f"{k}_mean,{k}_std" for k in METRIC_KEYS) + "\n")
        for label, per_point in adaptation.items():
            for p in points:
                fh.write(f"{label},{p}," + ",".join(f"{per_point[str(p)][k]['mean']:.6g},{per_point[str(p)][k]['std']:.6g}"
                                                     for k in METRIC_KEYS) + "\n")
    series = {label: {k: (points, [per_point[str(p)][k]["mean"] for p in points],
                          _spread([per_point[str(p)][k]["std"] for p in points], seeds)) for k in PAPER_METRICS}
              for label, per_point in adaptation.items()}
    test_refs = {DISPLAY_NAMES[n]: {k: summary["test_references"][n][k]["mean"] for k in PAPER_METRICS}
                 for n in ("oracle", "random")}
    plot_curves(series, out / "adaptation.png", xlabel="adaptation episodes on a held-out task",
                references=test_refs, marker="o", quick=quick,
                title=f"Online adaptation on held-out tasks (each network keeps one task). After n episodes: mean over "
                      f"{networks}, then over {count(seeds, 'seed')}; {_band(seeds)}.\n"
                      "Horizontal lines: reference policies on the same tasks (mean over seeds).")
    (out / "adaptation.md").write_text(adaptation_table(summary) + "\n")
    (out / "results.md").write_text(results_markdown(summary, table))


def adaptation_table(summary: dict) -> str:
    """Per metric, each adapter's mean ± std over seeds after n adaptation episodes."""
    points, seeds = summary["adapt_points"], summary["seeds"]
    oracle = summary["test_references"]["oracle"]
    lines = []
    for key in ("throughput_mbps", "return", "sinr_violations", "latency_violations", "fairness"):
        heading = (f"{HEADERS[key]} in adaptation episode n: that episode's mean over "
                   f"{count(summary['num_envs'], 'network')} (one held-out task each), then mean ± std over "
                   f"{count(seeds, 'seed')}; oracle on the same tasks: {_fmt(oracle[key], seeds)}")
        lines += [f"**{marked(heading, summary['quick'])}**", "",
                  "| | " + " | ".join(f"n={p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for label, per_point in summary["adaptation"].items():
            lines.append(f"| {DISPLAY_NAMES[label]} | "
                         + " | ".join(_fmt(per_point[str(p)][key], seeds) for p in points) + " |")
        lines.append("")
    return "\n".join(lines)


def change(value: float, ref: float, noun: str) -> str:
    """Signed relative change of ``value`` against ``ref``, in words: '−76 % (fewer violations)', '+12 % (more violations)'."""
    pct = round(100 * (value / ref - 1))
    if pct == 0:
        return f"0 % (about as many {noun})"
    return f"{pct:+d} %".replace("-", "−") + f" ({'fewer' if pct < 0 else 'more'} {noun})"


def _claims(summary: dict) -> list[str]:
    """The paper's claims, checked against the measured numbers; none judged for a quick run."""
    if summary["quick"]:
        return [f"Not judged: a QUICK run ({count(summary['train_episodes'], 'training episode')}, "
                f"{count(summary['num_envs'], 'network')} per episode, {count(summary['seeds'], 'seed')}) is too small "
                "to judge the paper's claims. Run `testbed reproduce` without `--quick` for that."]
    final, out = summary["final"], []
    if summary["seeds"] == 1:
        out.append("- Note: one seed, so there is no spread over seeds; 'clearly above' below means simply above.")
    tput = {a: final[a]["throughput_mbps"]["mean"] for a in AGENTS}
    best = max(tput, key=tput.get)
    out.append(f"- *The attention agent reaches the highest throughput*: {'holds' if best == 'rnn_attention' else 'does not hold'}"
               f" (highest at the end of training: {DISPLAY_NAMES[best]}, {tput[best]:.1f} Mbit/s).")
    meta = [a for a in AGENTS if a != "ppo"]
    beaten = [a for a in meta if tput[a] > tput["ppo"] + final["ppo"]["throughput_mbps"]["std"]]
    out.append(f"- *Every meta-learner beats PPO on throughput*: {'holds' if len(beaten) == len(meta) else 'does not hold'}"
               f" (PPO {tput['ppo']:.1f} Mbit/s; clearly above it, by more than PPO's std over seeds: "
               f"{', '.join(DISPLAY_NAMES[a] for a in beaten) or 'none'}).")
    for key, word in (("sinr_violations", "SINR"), ("latency_violations", "latency")):
        claim = f"- *Meta-learners cut {word} violations by 50 % or more against PPO*: "
        ppo = final["ppo"][key]["mean"]
        if ppo <= 0:
            out.append(claim + f"not judged (PPO has no {word} violations at the end of training, so a cut is undefined).")
            continue
        ok = all(final[a][key]["mean"] <= 0.5 * ppo for a in meta)
        out.append(claim + f"{'holds' if ok else 'does not hold'} (change vs PPO, − = fewer violations, + = more: "
                   + ", ".join(f"{DISPLAY_NAMES[a]} {change(final[a][key]['mean'], ppo, 'violations')}"
                               for a in meta) + ").")
    jain = {a: final[a]["fairness"]["mean"] for a in AGENTS}
    out.append(f"- *Jain's index ≥ 0.7 for the meta-learners*: "
               f"{'holds' if all(jain[a] >= 0.7 for a in meta) else 'does not hold'} ("
               + ", ".join(f"{DISPLAY_NAMES[a]} {jain[a]:.2f}" for a in AGENTS) + ").")
    oracle = summary["references"]["oracle"]["throughput_mbps"]["mean"]
    out.append(f"- *About 97 % of exhaustive search*: attention agent at {tput['rnn_attention'] / oracle:.0%} "
               f"of the per-band oracle's throughput (best agent {tput[best] / oracle:.0%}).")
    return out


def results_markdown(summary: dict, table: str) -> str:
    """``results.md``: setup, Fig. 3, the end-of-training ``table``, the claims, baseline and adaptation."""
    cfg = summary["config"]
    quick, seeds = summary["quick"], summary["seeds"]
    fixed = summary["fixed_task"]
    adapt = summary["adaptation"]
    last = str(summary["adapt_points"][-1])
    first = str(summary["adapt_points"][0])
    lines = [
        "# " + marked("Results: reproduction of the paper's experiment (generated by `testbed reproduce`)", quick), "",
        f"- Mode: {'QUICK (smoke-test sizes, not results)' if quick else 'full'}; {count(seeds, 'seed')}; "
        f"wall time {summary['wall_s'] / 60:.1f} min with {count(summary['workers'], 'worker process', 'worker processes')}.",
        f"- Network: B={cfg['network']['num_bs']}, U={cfg['network']['num_ue']}, K={cfg['network']['num_bands']}, "
        f"L={cfg['network']['num_levels']}, T={cfg['network']['episode_steps']} steps; "
        f"{count(summary['num_envs'], 'network')} (env lanes) play every episode; "
        f"{count(summary['train_episodes'], 'training episode')}.",
        f"- End-of-training numbers average the last {count(summary['tail_episodes'], 'training episode')} × "
        f"{count(summary['num_envs'], 'network')} of each seed (policies still sampling, as in Fig. 3); "
        f"{_plus_minus(seeds)}.",
        "", "## " + marked("Fig. 3", quick), "", "![Fig. 3](fig3.png)", "",
        "## " + marked("End of training (training task distribution)", quick), "", table, "",
        "## " + marked("The paper's claims, checked", quick), "", *_claims(summary), "",
        "## " + marked("Baseline strength: PPO on one fixed task (throughput-only reward) against the per-band oracle",
                       quick), "",
        "PPO: mean over the last tenth of its training episodes (at least one); oracle: mean over its evaluation "
        "episodes on the same task; both over every network.", "",
        "| seed | PPO (Mbit/s) | oracle (Mbit/s) | fraction |", "|---|---|---|---|",
        *[f"| {f['seed']} | {f['ppo_mbps']:.1f} | {f['oracle_mbps']:.1f} | {f['fraction']:.2f} |" for f in fixed], "",
        "## " + marked("Online adaptation on held-out tasks", quick), "", "![adaptation](adaptation.png)", "",
        adaptation_table(summary), "",
        f"Throughput gained by adaptation (episode {last} minus episode {first}, mean over "
        f"{count(seeds, 'seed')}; + = gained): " + ", ".join(
            f"{DISPLAY_NAMES[l]} {adapt[l][last]['throughput_mbps']['mean'] - adapt[l][first]['throughput_mbps']['mean']:+.1f} Mbit/s"
            for l in adapt) + ".", "",
    ]
    return "\n".join(lines)
