"""The results of `testbed reproduce`, from the summary of its run folders: ``summary.json``,
``curves.csv`` and ``fig3.png`` (training curves), ``table.md`` (end of training, and as fractions
of the oracle), ``adaptation.csv/.md/.png`` and ``results.md`` (with the paper's claims checked)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testbed.agent_factory import AGENTS
from testbed.metrics import DISPLAY_NAMES, HEADERS, METRIC_KEYS, PAPER_METRICS, TABLE_KEYS
from testbed.plots import plot_curves


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _fraction(value: float, oracle: float) -> str:
    return "—" if abs(oracle) < 1e-12 else f"{value / oracle:.2f}"


def markdown_table(rows: dict[str, dict], oracle: dict) -> str:
    """Mean ± std over seeds, then each metric as a fraction of the oracle's."""
    head = "| | " + " | ".join(HEADERS[c] for c in TABLE_KEYS) + " |"
    lines = [head, "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {DISPLAY_NAMES.get(name, name)} | "
                     + " | ".join(_fmt(stats[c]) for c in TABLE_KEYS) + " |")
    lines += ["", "Fraction of the per-band oracle (agent mean / oracle mean):", "", head,
              "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {DISPLAY_NAMES.get(name, name)} | " + " | ".join(
            _fraction(stats[c]["mean"], oracle[c]["mean"]) for c in TABLE_KEYS) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict) -> None:
    """Every output file of a reproduction in ``out``, from the summary ``collect`` returns."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    curves = summary["curves"]
    length = len(curves[AGENTS[0]]["return"]["mean"])
    x = np.arange(length)
    with open(out / "curves.csv", "w") as fh:
        fh.write("agent,episode," + ",".join(f"{k}_mean,{k}_std" for k in METRIC_KEYS) + "\n")
        for agent in AGENTS:
            for e in range(len(curves[agent]["return"]["mean"])):
                cells = [f"{curves[agent][k]['mean'][e]:.6g},{curves[agent][k]['std'][e]:.6g}" for k in METRIC_KEYS]
                fh.write(f"{agent},{e}," + ",".join(cells) + "\n")
    series = {a: {k: (x[:len(curves[a][k]['mean'])], curves[a][k]["mean"], curves[a][k]["std"]) for k in PAPER_METRICS}
              for a in AGENTS}
    refs = {DISPLAY_NAMES[n]: {k: summary["references"][n][k]["mean"] for k in PAPER_METRICS}
            for n in ("oracle", "random")}
    plot_curves(series, out / "fig3.png", references=refs, window=max(1, length // 24),
                title=f"Training on the task stream: mean over {summary['seeds']} seeds ± 1 std "
                      f"({summary['num_envs']} networks per episode, moving average over {max(1, length // 24)} episodes)")
    rows = {**summary["final"], **summary["references"]}
    table = markdown_table(rows, summary["references"]["oracle"])
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
                          [per_point[str(p)][k]["std"] for p in points]) for k in PAPER_METRICS}
              for label, per_point in adaptation.items()}
    test_refs = {DISPLAY_NAMES[n]: {k: summary["test_references"][n][k]["mean"] for k in PAPER_METRICS}
                 for n in ("oracle", "random")}
    plot_curves(series, out / "adaptation.png", xlabel="adaptation episodes on a held-out task",
                references=test_refs, title="Online adaptation on held-out tasks: mean over seeds ± 1 std", marker="o")
    (out / "adaptation.md").write_text(adaptation_table(summary) + "\n")
    (out / "results.md").write_text(results_markdown(summary, table))


def adaptation_table(summary: dict) -> str:
    """Per metric, each adapter's mean ± std over seeds after n adaptation episodes."""
    points = summary["adapt_points"]
    oracle = summary["test_references"]["oracle"]
    lines = []
    for key in ("throughput_mbps", "return", "sinr_violations", "latency_violations", "fairness"):
        lines += [f"**{HEADERS[key]}** after n adaptation episodes (mean ± std over seeds; "
                  f"oracle on the same tasks: {_fmt(oracle[key])})", "",
                  "| | " + " | ".join(f"n={p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for label, per_point in summary["adaptation"].items():
            lines.append(f"| {DISPLAY_NAMES[label]} | " + " | ".join(_fmt(per_point[str(p)][key]) for p in points) + " |")
        lines.append("")
    return "\n".join(lines)


def _claims(summary: dict) -> list[str]:
    """The paper's claims, checked against the measured numbers."""
    final, out = summary["final"], []
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
        ppo = final["ppo"][key]["mean"]
        cuts = {a: 1 - final[a][key]["mean"] / ppo for a in meta} if ppo > 0 else {}
        ok = cuts and all(c >= 0.5 for c in cuts.values())
        out.append(f"- *Meta-learners cut {word} violations by 50 % or more against PPO*: {'holds' if ok else 'does not hold'}"
                   f" (reduction: " + ", ".join(f"{DISPLAY_NAMES[a]} {100 * c:.0f} %" for a, c in cuts.items()) + ").")
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
    fixed = summary["fixed_task"]
    adapt = summary["adaptation"]
    last = str(summary["adapt_points"][-1])
    first = str(summary["adapt_points"][0])
    lines = [
        "# Results: reproduction of the paper's experiment (generated by `testbed reproduce`)", "",
        f"- Mode: {'QUICK (smoke-test sizes, not results)' if summary['quick'] else 'full'}; seeds: {summary['seeds']}; "
        f"wall time {summary['wall_s'] / 60:.1f} min with {summary['workers']} worker processes.",
        f"- Network: B={cfg['network']['num_bs']}, U={cfg['network']['num_ue']}, K={cfg['network']['num_bands']}, "
        f"L={cfg['network']['num_levels']}, T={cfg['network']['episode_steps']} steps; "
        f"{summary['num_envs']} networks (env lanes) play every episode; {summary['train_episodes']} training episodes.",
        f"- End-of-training numbers average the last {summary['tail_episodes']} training episodes of each seed "
        "(policies still sampling, as in Fig. 3); ± is the std over seeds.",
        "", "## Fig. 3", "", "![Fig. 3](fig3.png)", "", "## End of training (training task distribution)", "", table, "",
        "## The paper's claims, checked", "", *_claims(summary), "",
        "## Baseline strength: PPO on one fixed task (throughput-only reward) against the per-band oracle", "",
        "| seed | PPO (Mbit/s) | oracle (Mbit/s) | fraction |", "|---|---|---|---|",
        *[f"| {f['seed']} | {f['ppo_mbps']:.1f} | {f['oracle_mbps']:.1f} | {f['fraction']:.2f} |" for f in fixed], "",
        "## Online adaptation on held-out tasks", "", "![adaptation](adaptation.png)", "",
        adaptation_table(summary), "",
        "Throughput gained by adaptation (episode " + last + " minus episode " + first + "): " + ", ".join(
            f"{DISPLAY_NAMES[l]} {adapt[l][last]['throughput_mbps']['mean'] - adapt[l][first]['throughput_mbps']['mean']:+.1f} Mbit/s"
            for l in adapt) + ".", "",
    ]
    return "\n".join(lines)
