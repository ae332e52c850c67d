"""The results of `testbed reproduce`, from the summary of its run folders: ``summary.json``,
``table.md`` (the main results: every agent with argmax and with sampled actions and every
reference policy on the fixed evaluation sets of the training and the held-out distribution,
and as fractions of the oracle), ``curves.csv`` and ``fig3.png`` (training curves),
``adaptation.csv/.md/.png`` and ``results.md`` (with the paper's claims and the testbed's aims checked
on the deterministic evaluation); or, when jobs failed, a ``summary.json`` and ``results.md`` naming them.
Every report names the backends it ran on; a bench run's also its radios, their start-up
calibration, the bench budget with the air time and the steps measured, and the same agents and
references evaluated in the simulator and on the bench side by side (the sim-to-real gap).
Every caption and heading says what its numbers average; one seed, or one run of a reference
policy, shows no spread ('± n/a'); a quick run's figures and tables are marked QUICK and its
results.md judges none of the claims. A reference policy left out of ``run.policies`` is left
out of every table and figure, and what needs the oracle says it was not run.
With the hardware task family in the simulator, table.md and results.md lead with the value of
information (informed PPO against PPO), and the adaptation is also given as fractions of the informed
PPO and of the oracle on the same tasks, with the samples each adapter needs to reach 90 % of the
informed PPO; elsewhere they say why there is no informed ceiling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testbed.agent_factory import AGENTS
from testbed.metrics import DISPLAY_NAMES, HEADERS, METRIC_KEYS, PAPER_METRICS, TABLE_KEYS, display_name
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
            f"{count(summary['num_envs'], 'network')} (policies still sampling, on the training task stream); "
            f"then mean ± std over {count(seeds, 'seed')} ({_plus_minus(seeds)})")


DISTRIBUTION_NAMES = {"train": "training distribution", "test": "held-out distribution"}
INFORMED_NAME = DISPLAY_NAMES["ppo_informed"]
META = ("maml", "rnn", "rnn_attention")            # the meta-learners among the adapters
PPO_ADAPTERS = ("ppo_finetune", "ppo_scratch")


def _on_bench(summary: dict) -> str:
    """' on the bench (backend mock)' for a bench run, '' otherwise."""
    return f" on the bench (backend {summary['bench']['backend']})" if summary["bench"] else ""


def _evaluated(summary: dict, distribution: str) -> str:
    """What one number of an evaluation table averages."""
    ev, seeds = summary["evaluation_set"], summary["seeds"]
    return (f"Evaluation{_on_bench(summary)} on the {DISTRIBUTION_NAMES[distribution]}'s fixed set of {count(ev['num_tasks'], 'task')} "
            f"(evaluation seed {ev['seed']}, one per network, {count(ev['episodes'], 'episode')} each, no learning). "
            f"Agents with argmax and with sampled actions: per seed, the mean over the episodes × tasks, then mean ± "
            f"std over {count(seeds, 'seed')} ({_plus_minus(seeds)}); reference policies: one run on the same tasks "
            "and draws (± n/a)")


def markdown_table(rows: dict[str, dict], oracle: dict | None, seeds: int, heading: str, single=()) -> str:
    """``heading``, mean ± std over seeds (the rows named in ``single``: one run, '± n/a'), then each
    metric as a fraction of the ``oracle``'s (None: no fractions)."""
    head = "| | " + " | ".join(HEADERS[c] for c in TABLE_KEYS) + " |"
    lines = [f"**{heading}**", "", head, "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        n = 1 if name in single else seeds
        lines.append(f"| {display_name(name)} | " + " | ".join(_fmt(stats[c], n) for c in TABLE_KEYS) + " |")
    if oracle is None:
        return "\n".join(lines)
    lines += ["", "Fraction of the per-band oracle (agent mean / oracle mean; — where the oracle's mean is 0):", "",
              head, "|---" * (len(TABLE_KEYS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {display_name(name)} | " + " | ".join(
            _fraction(stats[c]["mean"], oracle[c]["mean"]) for c in TABLE_KEYS) + " |")
    return "\n".join(lines)


def evaluation_tables(summary: dict) -> str:
    """The main results: one table per distribution of the evaluation protocol."""
    parts = []
    for distribution, rows in summary["evaluation"].items():
        parts.append(markdown_table(rows, rows.get("oracle"), summary["seeds"],
                                    marked(_evaluated(summary, distribution), summary["quick"]),
                                    single=summary["references"]))
        if "oracle" not in rows:
            parts.append("(No fractions of the per-band oracle: it is not among run.policies.)")
    return "\n\n".join(parts)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def no_informed_ceiling(summary: dict) -> str | None:
    """Why the run has no informed ceiling; None where it has one."""
    if summary.get("informed"):
        return None
    if summary["bench"]:
        return ("No informed ceiling on the bench: it has no ground truth of the hidden hardware parameters to "
                "inform a policy of (the simulator's reproduction, `testbed reproduce`, measures it).")
    family = summary["config"]["network"]["task_family"]
    if family != "hardware":
        return (f"No informed ceiling for task family {family}: its tasks have no hidden hardware parameters to "
                "inform a policy of (network.informed needs task_family hardware).")
    return "No informed ceiling: the informed PPO did not run."


def value_of_information(summary: dict) -> str:
    """Informed PPO against PPO (argmax) on both fixed evaluation sets, and their ratios; or why there is none."""
    why = no_informed_ceiling(summary)
    if why:
        return why
    seeds, informed = summary["seeds"], summary["informed"]
    heading = (f"Value of information{_on_bench(summary)}: {INFORMED_NAME} (trained with the hidden hardware "
               "parameters in its observation, network.informed: true, and the shared link head) against PPO without "
               "them, both with argmax "
               f"actions on each distribution's fixed evaluation set; per seed the mean over the episodes × tasks, then "
               f"mean ± std over {count(seeds, 'seed')} ({_plus_minus(seeds)}). Ratios are of the means over seeds: "
               "return above random = (R_informed − R_random) / (R_PPO − R_random), random on the same tasks and draws; "
               "— where the denominator (R_PPO − R_random, R_PPO, PPO's throughput) is not above 0")
    lines = [f"**{marked(heading, summary['quick'])}**", "",
             f"| | PPO return / ep | {INFORMED_NAME} return / ep | random return / ep | return above random, informed / PPO "
             f"| return, informed / PPO | PPO throughput (Mbit/s) | {INFORMED_NAME} throughput (Mbit/s) "
             "| throughput, informed / PPO |", "|---" * 9 + "|"]
    for dist, value in informed["value"].items():
        ppo, inf = summary["evaluation"][dist]["ppo/argmax"], informed["evaluation"][dist]["ppo_informed/argmax"]
        random = summary["evaluation"][dist].get("random")
        lines.append(f"| {DISTRIBUTION_NAMES[dist]} | {_fmt(ppo['return'], seeds)} | {_fmt(inf['return'], seeds)} | "
                     f"{'not run' if random is None else _fmt(random['return'], 1)} | "
                     f"{_ratio(value['return_above_random'])} | {_ratio(value['return'])} | "
                     f"{_fmt(ppo['throughput_mbps'], seeds)} | {_fmt(inf['throughput_mbps'], seeds)} | "
                     f"{_ratio(value['throughput_mbps'])} |")
    return "\n".join(lines)


def _reference_lines(rows: dict[str, dict]) -> dict[str, dict]:
    """The horizontal lines of a figure: the oracle and random policy where they ran."""
    return {DISPLAY_NAMES[n]: {k: rows[n][k]["mean"] for k in PAPER_METRICS} for n in ("oracle", "random") if n in rows}


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
    refs = _reference_lines(summary["evaluation"]["train"])
    window = max(1, length // 24)
    smoothing = f"moving average over {count(window, 'episode')}" if window > 1 else "no smoothing"
    plot_curves(series, out / "fig3.png", references=refs, window=window, quick=quick,
                title=f"Training on the task stream{' in the simulator' if summary['bench'] else ''}. Per episode: mean over {networks}, then over "
                      f"{count(seeds, 'seed')}; {_band(seeds)}; {smoothing}.\n"
                      "Horizontal lines: reference policies on the training distribution's evaluation set.")
    table = evaluation_tables(summary)
    (out / "table.md").write_text(value_of_information(summary) + "\n\n" + table + "\n")

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
    test_refs = _reference_lines(summary["test_references"])
    plot_curves(series, out / "adaptation.png", xlabel="adaptation episodes on a held-out task",
                references=test_refs, marker="o", quick=quick,
                title=f"Online adaptation{_on_bench(summary)} on held-out tasks (each network keeps one task). After n "
                      f"episodes: mean over {count(summary['adapt_num_envs'], 'network')}, then over {count(seeds, 'seed')}; {_band(seeds)}.\n"
                      "Horizontal lines: reference policies on the same tasks (mean over seeds).")
    parts = (adaptation_table(summary), fraction_tables(summary), samples_to_reach(summary))
    (out / "adaptation.md").write_text("\n\n".join(part for part in parts if part) + "\n")
    (out / "results.md").write_text(results_markdown(summary, table))


def adaptation_table(summary: dict) -> str:
    """Per metric, each adapter's mean ± std over seeds after n adaptation episodes."""
    points, seeds = summary["adapt_points"], summary["seeds"]
    oracle = summary["test_references"].get("oracle")
    lines = []
    for key in ("throughput_mbps", "return", "sinr_violations", "latency_violations", "fairness"):
        heading = (f"{HEADERS[key]} in adaptation episode n{_on_bench(summary)}: that episode's mean over "
                   f"{count(summary['adapt_num_envs'], 'network')} (one held-out task each), then mean ± std over "
                   f"{count(seeds, 'seed')}" + (f"; oracle on the same tasks: {_fmt(oracle[key], seeds)}" if oracle else ""))
        lines += [f"**{marked(heading, summary['quick'])}**", "",
                  "| | " + " | ".join(f"n={p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for label, per_point in summary["adaptation"].items():
            lines.append(f"| {DISPLAY_NAMES[label]} | "
                         + " | ".join(_fmt(per_point[str(p)][key], seeds) for p in points) + " |")
        lines.append("")
    return "\n".join(lines)


def fraction_tables(summary: dict) -> str:
    """Each adapter's return and throughput after n adaptation episodes as fractions of the informed PPO's
    and of the oracle's on the same tasks (mean ± std over seeds of per-seed fractions)."""
    fractions, seeds, points = summary.get("adaptation_fractions", {}), summary["seeds"], summary["adapt_points"]
    names = {"informed": INFORMED_NAME, "oracle": "per-band oracle"}
    plays = {"informed": " (it plays argmax actions there and does not learn)", "oracle": ""}
    parts = [] if "informed" in fractions else [no_informed_ceiling(summary) or ""]
    if "oracle" not in summary["references"]:
        parts.append("(No fractions of the per-band oracle: it is not among run.policies.)")
    for ref, per_label in fractions.items():
        name = names[ref]
        for key, how in (("return", f"normalised against random: (R_n − R_random) / (R_ref − R_random), R_ref and "
                                    f"R_random the means over the episodes the {name}{plays[ref]} and random played on "
                                    f"these tasks; 1: as good as the {name}, 0: no better than random; —: on some "
                                    f"seed's tasks the {name} is not above random, or random did not run"),
                         ("throughput_mbps", f"T_n / T_ref, T_ref the mean over the episodes the {name}{plays[ref]} "
                                             f"played on these tasks; —: the {name}'s throughput is 0 on some seed's")):
            heading = (f"{HEADERS[key]} in adaptation episode n{_on_bench(summary)} as a fraction of the {name}'s on "
                       f"the same held-out tasks, {how}. Per seed, then mean ± std over {count(seeds, 'seed')} "
                       f"({_plus_minus(seeds)})")
            lines = [f"**{marked(heading, summary['quick'])}**", "",
                     "| | " + " | ".join(f"n={p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
            for label, per_point in per_label.items():
                lines.append(f"| {DISPLAY_NAMES[label]} | " + " | ".join(
                    "—" if per_point[str(p)][key] is None else _fmt(per_point[str(p)][key], seeds) for p in points) + " |")
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _steps(reached: dict, samples: dict) -> str:
    """An adapter's samples to reach the threshold, in words."""
    if reached["episode"] is None:
        last = samples["last_episode"]
        return f"not within {count(last, 'episode')} (> {last * samples['episode_steps']} steps)"
    return f"episode {reached['episode']}: {reached['steps']} steps"


def _against(meta: dict, ppo: dict, samples: dict) -> str:
    """PPO's samples to the threshold over a meta-learner's: how many times more PPO needs."""
    if meta["episode"] is None:
        return "— (the meta-learner did not reach it)"
    if meta["steps"] == 0:
        return "— (the meta-learner reached it before any adaptation)"
    if ppo["episode"] is None:
        return f"> {samples['last_episode'] * samples['episode_steps'] / meta['steps']:.1f}× (PPO did not reach it)"
    return f"{ppo['steps'] / meta['steps']:.1f}×"


def samples_to_reach(summary: dict) -> str:
    """Per adapter, the adaptation samples it needs to reach 90 % of the informed PPO's normalised return;
    the meta-learners against PPO fine-tuned and PPO from scratch ('' without the informed PPO)."""
    samples = summary.get("samples_to_reach")
    if samples is None:
        return ""                       # no informed ceiling: fraction_tables says why
    pct = f"{samples['threshold']:.0%}"
    heading = (f"Samples to reach {pct} of the {INFORMED_NAME}{_on_bench(summary)}: the first adaptation episode n "
               f"(any of 0 to {samples['last_episode']}, not only the table's) at which the adapter's return, "
               f"normalised as above and averaged over {count(summary['seeds'], 'seed')}, is at least {samples['threshold']:g}; steps: the network-steps each "
               f"held-out task (one network) had played before that episode, n × {samples['episode_steps']}. The "
               "ratios: PPO's steps over the meta-learner's (above 1: PPO needs more)")
    if samples["why_not"]:
        return f"**{marked(heading, summary['quick'])}**\n\nNot measured: {samples['why_not']}."
    reached = samples["adapters"]
    lines = [f"**{marked(heading, summary['quick'])}**", "",
             f"| | reaches {pct} | vs PPO fine-tuned | vs PPO from scratch |", "|---|---|---|---|"]
    for label, r in reached.items():
        cells = [_against(r, reached[p], samples) if label in META else "" for p in PPO_ADAPTERS]
        lines.append(f"| {DISPLAY_NAMES[label]} | {_steps(r, samples)} | " + " | ".join(cells) + " |")
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
    train = summary["evaluation"]["train"]
    final = {a: train[f"{a}/argmax"] for a in AGENTS}    # the deterministic evaluation on the training distribution
    out = []
    if summary["seeds"] == 1:
        out.append("- Note: one seed, so there is no spread over seeds; 'clearly above' below means simply above.")
    tput = {a: final[a]["throughput_mbps"]["mean"] for a in AGENTS}
    best = max(tput, key=tput.get)
    out.append(f"- *The attention agent reaches the highest throughput*: {'holds' if best == 'rnn_attention' else 'does not hold'}"
               f" (highest: {DISPLAY_NAMES[best]}, {tput[best]:.1f} Mbit/s).")
    meta = [a for a in AGENTS if a != "ppo"]
    beaten = [a for a in meta if tput[a] > tput["ppo"] + final["ppo"]["throughput_mbps"]["std"]]
    out.append(f"- *Every meta-learner beats PPO on throughput*: {'holds' if len(beaten) == len(meta) else 'does not hold'}"
               f" (PPO {tput['ppo']:.1f} Mbit/s; clearly above it, by more than PPO's std over seeds: "
               f"{', '.join(DISPLAY_NAMES[a] for a in beaten) or 'none'}).")
    for key, word in (("sinr_violations", "SINR"), ("latency_violations", "latency")):
        claim = f"- *Meta-learners cut {word} violations by 50 % or more against PPO*: "
        ppo = final["ppo"][key]["mean"]
        if ppo <= 0:
            out.append(claim + f"not judged (PPO has no {word} violations, so a cut is undefined).")
            continue
        ok = all(final[a][key]["mean"] <= 0.5 * ppo for a in meta)
        out.append(claim + f"{'holds' if ok else 'does not hold'} (change vs PPO, − = fewer violations, + = more: "
                   + ", ".join(f"{DISPLAY_NAMES[a]} {change(final[a][key]['mean'], ppo, 'violations')}"
                               for a in meta) + ").")
    jain = {a: final[a]["fairness"]["mean"] for a in AGENTS}
    out.append(f"- *Jain's index ≥ 0.7 for the meta-learners*: "
               f"{'holds' if all(jain[a] >= 0.7 for a in meta) else 'does not hold'} ("
               + ", ".join(f"{DISPLAY_NAMES[a]} {jain[a]:.2f}" for a in AGENTS) + ").")
    if "oracle" not in train:
        out.append("- *About 97 % of exhaustive search*: not judged (the oracle is not among run.policies).")
        return out
    oracle = train["oracle"]["throughput_mbps"]["mean"]
    out.append(f"- *About 97 % of exhaustive search*: attention agent at {tput['rnn_attention'] / oracle:.0%} "
               f"of the per-band oracle's throughput (best agent {tput[best] / oracle:.0%}).")
    return out


def _aims(summary: dict) -> list[str]:
    """The testbed's aims, measured: learned agents against greedy, the value of information, and how
    fast the best meta-learner nears the informed PPO; none judged for a quick run."""
    if summary["quick"]:
        return ["Not judged: a QUICK run (see above)."]
    train, out = summary["evaluation"]["train"], []
    learned = {display_name(f"{a}/argmax"): train[f"{a}/argmax"] for a in AGENTS}
    if summary.get("informed"):
        learned[f"{INFORMED_NAME} (argmax)"] = summary["informed"]["evaluation"]["train"]["ppo_informed/argmax"]
    claim = "- *Every learned agent at least matches greedy's return on the training tasks (argmax)*: "
    if "greedy" not in train:
        out.append(claim + "not judged (greedy is not among run.policies).")
    else:
        greedy = train["greedy"]["return"]["mean"]
        ok = all(stats["return"]["mean"] >= greedy for stats in learned.values())
        out.append(claim + f"{'holds' if ok else 'does not hold'} (return / ep, mean over seeds: greedy {greedy:.3g}; "
                   + ", ".join(f"{name} {stats['return']['mean']:.3g}" for name, stats in learned.items()) + ").")
    claim = f"- *{INFORMED_NAME} at least 20 % above PPO on the held-out set (return above random, argmax)*: "
    why = no_informed_ceiling(summary)
    value = None if why else summary["informed"]["value"]["test"]
    if why:
        out.append(claim + f"not judged ({why.rstrip('.')}).")
    elif value["return_above_random"] is None:
        out.append(claim + "not judged (PPO's return is not above random's on the held-out set: the ratio is undefined).")
    else:
        out.append(claim + f"{'holds' if value['return_above_random'] >= 1.2 else 'does not hold'} (informed / PPO: "
                   f"return above random {value['return_above_random']:.2f}, return {_ratio(value['return'])}, "
                   f"throughput {_ratio(value['throughput_mbps'])}).")
    samples = summary.get("samples_to_reach")
    claim = f"- *The best meta-learner reaches 90 % of the {INFORMED_NAME} within 5 adaptation episodes*: "
    if why or samples["why_not"]:
        out.append(claim + f"not judged ({why.rstrip('.') if why else samples['why_not']}).")
        return out
    reached = {a: samples["adapters"][a]["episode"] for a in META if samples["adapters"][a]["episode"] is not None}
    best = min(reached, key=reached.get) if reached else None
    ok = best is not None and reached[best] <= 5
    out.append(claim + f"{'holds' if ok else 'does not hold'} (" + (
        f"first: {DISPLAY_NAMES[best]} at episode {reached[best]}" if best else
        f"no meta-learner within {count(samples['last_episode'], 'episode')}") + ").")
    return out


def _baseline(summary: dict) -> list[str]:
    """The baseline-strength section's body: its table, or why it did not run."""
    if not summary["fixed_task"]:
        return ["Not run: it measures PPO against the per-band oracle, which is not among run.policies."]
    return ["PPO: mean over the last tenth of its training episodes (at least one); oracle: mean over its evaluation "
            "episodes on the same task; both over every network.", "",
            "| seed | PPO (Mbit/s) | oracle (Mbit/s) | fraction |", "|---|---|---|---|",
            *[f"| {f['seed']} | {f['ppo_mbps']:.1f} | {f['oracle_mbps']:.1f} | {f['fraction']:.2f} |"
              for f in summary["fixed_task"]]]


def results_markdown(summary: dict, table: str) -> str:
    """``results.md``: setup, the value of information, the evaluation ``table``, the claims and aims,
    Fig. 3 with the end of training, baseline and adaptation (with its fractions and samples to 90 %)."""
    cfg = summary["config"]
    quick, seeds = summary["quick"], summary["seeds"]
    adapt = summary["adaptation"]
    last = str(summary["adapt_points"][-1])
    first = str(summary["adapt_points"][0])
    ev = summary["evaluation_set"]
    training = markdown_table(summary["final"], None, seeds, marked(f"End of training: {_averaged(summary)}", quick))
    lines = [
        "# " + marked("Results: reproduction of the paper's experiment (generated by `testbed reproduce`)", quick), "",
        f"- Mode: {'QUICK (smoke-test sizes, not results)' if quick else 'full'}; {count(seeds, 'seed')}; "
        f"wall time {summary['wall_s'] / 60:.1f} min with {count(summary['workers'], 'worker process', 'worker processes')}.",
        f"- Network: B={cfg['network']['num_bs']}, U={cfg['network']['num_ue']}, K={cfg['network']['num_bands']}, "
        f"L={cfg['network']['num_levels']}, T={cfg['network']['episode_steps']} steps, task family "
        f"{cfg['network']['task_family']}; {count(summary['num_envs'], 'network')} (env lanes) play every training "
        f"episode; {count(summary['train_episodes'], 'training episode')}.",
        f"- Evaluation: per distribution a fixed set of {count(ev['num_tasks'], 'task')} (evaluation seed {ev['seed']}, "
        f"the same for every seed and policy), {count(ev['episodes'], 'episode')} each; every agent with argmax and "
        f"with sampled actions, the reference policies ({', '.join(summary['references'])}) on the same tasks and draws.",
        *_backend_lines(summary),
        "", "## " + marked("Value of information: the informed-PPO ceiling", quick), "", value_of_information(summary), "",
        "## " + marked(f"Evaluation{_on_bench(summary)} (fixed tasks, no learning)", quick), "", table, "",
        *_side_by_side(summary),
        "## " + marked("The paper's claims, checked (argmax actions, training distribution's evaluation set)", quick), "",
        *_claims(summary), "",
        "## " + marked("The testbed's aims, measured", quick), "", *_aims(summary), "",
        "## " + marked("Fig. 3: training curves", quick), "", "![Fig. 3](fig3.png)", "", training, "",
        "## " + marked("Baseline strength: PPO on one fixed task (throughput-only reward) against the per-band oracle",
                       quick), "", *_baseline(summary), "",
        "## " + marked(f"Online adaptation{_on_bench(summary)} on held-out tasks", quick), "",
        "![adaptation](adaptation.png)", "",
        adaptation_table(summary), "", fraction_tables(summary), "", samples_to_reach(summary), "",
        f"Throughput gained by adaptation (episode {last} minus episode {first}, mean over "
        f"{count(seeds, 'seed')}; + = gained): " + ", ".join(
            f"{DISPLAY_NAMES[l]} {adapt[l][last]['throughput_mbps']['mean'] - adapt[l][first]['throughput_mbps']['mean']:+.1f} Mbit/s"
            for l in adapt) + ".", "",
    ]
    return "\n".join(lines)


def _backend_lines(summary: dict) -> list[str]:
    """The setup lines on where each part ran: backends, radios, twin, budget and air time."""
    bench = summary["bench"]
    if bench is None:
        return [f"- Backend: {summary['backends']['train']} for every training, evaluation and adaptation."]
    budget, measured = bench["budget"], bench["measured"]
    trained_on = (f"the twin {bench['twin']['path']} (sha256 {bench['twin']['sha256'][:12]})" if bench["twin"]
                  else "the bench's network (the bench config on backend sim, without its hardware section)")
    rate = f", {measured['steps_per_s']:.1f} steps/s" if measured["steps_per_s"] else ""
    return [
        f"- Backends: every training in the simulator (backend {summary['backends']['train']}) on {trained_on}; "
        f"every evaluation, reference run and adaptation on the bench: backend {bench['backend']}, radios "
        + ", ".join(f"{r['name']} ({r['driver']}, {r['role']})" for r in bench["radios"]) + ".",
        f"- Bench budget, stated before the run: {budget['episodes']} episodes, {budget['steps']} network-steps, air "
        f"time at most {budget['air_time_s']:.0f} s (TX on: {budget['captures_tx_on_per_step']} captures of "
        f"{budget['capture_s'] * 1e3:.2f} ms per network-step). Measured: {measured['steps']} network-steps on the "
        f"bench, {measured['timed_steps']} of them timed in {measured['seconds']:.0f} s{rate}.",
        "", "## " + marked("Bench calibration at start-up", summary["quick"]), "", *_calibration_lines(bench)]


def _calibration_lines(bench: dict) -> list[str]:
    """Per radio, the frequency calibration of the first bench job that opened the radios, and the
    largest residual over all of them."""
    runs = bench["calibration"]
    if not runs:
        return ["No calibration recorded (hardware.calibrate: false, or dry run)."]
    first, calibration = next(iter(runs.items()))
    lines = [f"Each bench job opens the radios and calibrates them ({count(len(runs), 'opening')}; every one is in "
             f"summary.json). Offset measured against the first UE radio and correction applied at the first "
             f"({first}); residual: the largest |residual| over all openings. Hz.", "",
             "| radio | offset measured | correction applied | residual (largest) |", "|---|---|---|---|"]
    for name, c in calibration.items():
        worst = max((r[name].get("residual_hz", 0.0) for r in runs.values() if name in r), key=abs)
        lines.append(f"| {name} | {c['offset_hz']:+.1f} | {c['corrected_hz']:+.1f} | {worst:+.1f} |")
    return lines


def _side_by_side(summary: dict) -> list[str]:
    """The same agents and references evaluated in the simulator and on the bench, per metric: the sim-to-real gap."""
    bench = summary["bench"]
    if bench is None:
        return []
    quick = summary["quick"]
    lines = ["## " + marked("Simulator and bench side by side (sim-to-real gap)", quick), "",
             f"The evaluation protocol above, played with the same agents and policies in the simulator they were "
             f"trained in ({'the twin' if bench['twin'] else 'the bench network on backend sim'}) and on the bench. "
             "Per cell: simulator → bench (gap = bench − simulator), means over seeds.", ""]
    for distribution, rows in summary["evaluation"].items():
        sim = bench["sim_evaluation"][distribution]
        lines += [f"**{marked(f'{DISTRIBUTION_NAMES[distribution].capitalize()}: simulator → bench (gap)', quick)}**", "",
                  "| | " + " | ".join(HEADERS[c] for c in TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
        for name, stats in rows.items():
            cells = [f"{sim[name][c]['mean']:.3g} → {stats[c]['mean']:.3g} ({stats[c]['mean'] - sim[name][c]['mean']:+.2g})"
                     for c in TABLE_KEYS]
            lines.append(f"| {display_name(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write_failures(out: Path, quick: bool, seeds: int, failed: dict[str, str]) -> Path:
    """``summary.json`` and ``results.md`` of a run with failed jobs: their names and errors, no figures."""
    (out / "summary.json").write_text(json.dumps({"quick": quick, "seeds": seeds, "failed_jobs": failed}, indent=1))
    lines = ["# Results: incomplete, jobs failed", "",
             "These jobs failed, so no figures or tables were made; the finished runs are kept in runs/. "
             "Rerun the same command to run the failed jobs again (finished trainings and adaptations are not repeated).", "",
             "| job | error |", "|---|---|", *[f"| {name} | {why.replace('|', '/')} |" for name, why in failed.items()], ""]
    (out / "results.md").write_text("\n".join(lines))
    return out
