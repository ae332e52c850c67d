"""`testbed reproduce`: the paper's experiment in simulation, over several seeds.

Per seed: (meta-)train PPO, MAML, RNN and RNN + attention on the training task stream;
run the reference policies on the same distribution; then adapt on the held-out test tasks
(each lane keeps one task) for 20 episodes: the three meta-learners, PPO fine-tuned from its
multi-task policy and PPO from scratch, beside the reference policies on the same tasks; and a
baseline-strength check, PPO on one fixed task with a throughput-only reward against the
per-band oracle. Jobs run in parallel processes; a rerun resumes unfinished trainings.

Outputs in the results folder: ``fig3.png`` (four panels against episode, mean over seeds
with a ±1 std band), ``curves.csv``, ``table.md`` (end-of-training metrics, mean ± std over
seeds, and as fractions of the oracle), ``adaptation.csv/.md/.png``, ``summary.json`` and
``results.md``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from testbed.checkpoint import MetricsLog, load_checkpoint, read_metrics, truncate_metrics
from testbed.config import Config, load_config, to_dict
from testbed.metrics import PAPER_METRICS
from testbed.runner import AGENTS, METRIC_KEYS, adapt, opened_env, policy_of_checkpoint, train

ADAPT_POINTS = (0, 1, 2, 5, 10, 20)
REFERENCES = ("random", "max_power", "greedy", "oracle")
ADAPTERS = ("maml", "rnn", "rnn_attention", "ppo_finetune", "ppo_scratch")
THROUGHPUT_ONLY = {"w_fairness": 0.0, "w_cost": 0.0, "w_penalty": 0.0}
QUICK = {"network": {"episode_steps": 20}, "env": {"num_envs": 4},
         "agent": {"episodes": 8, "checkpoint_every": 2, "recurrent": {"episodes_per_trial": 2}}}


class Plan:
    """Sizes of one reproduction."""

    def __init__(self, config: Config, quick: bool, num_seeds: int):
        self.quick, self.num_seeds = quick, num_seeds
        self.train_episodes = config.agent.episodes
        self.adapt_points = (0, 1, 2, 5) if quick else ADAPT_POINTS
        self.adapt_episodes = self.adapt_points[-1] + 1
        self.reference_episodes = 2 if quick else 20
        self.fixed_episodes = 6 if quick else 150
        self.tail = max(1, self.train_episodes // 10)   # end-of-training window, in episodes


def _seeded(config: dict, seed: int, **sections) -> Config:
    """``config`` for seed number ``seed`` (env.seed offset by it), with ``sections`` overridden."""
    base = load_config(config)
    env = {"seed": base.env.seed + seed, **sections.pop("env", {})}
    return load_config(base, {"env": env, **sections})


# jobs (run in worker processes) ---------------------------------------------------------------
def _job_train(config: dict, agent: str, seed: int, run_dir: str) -> str:
    _one_thread()
    train(_seeded(config, seed), agent, Path(run_dir), progress=False)
    return run_dir


def _job_references(config: dict, seed: int, episodes: int, run_dir: str, distribution: str, per_task: int) -> str:
    """The reference policies, every one on the same tasks and draws; metrics.jsonl rows per policy and episode."""
    from tqdm import tqdm

    from testbed.demo import run_policy

    _one_thread()
    cfg = _seeded(config, seed, env={"task_distribution": distribution, "episodes_per_task": per_task})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with opened_env(cfg) as env:
        for name in REFERENCES:
            lanes = run_policy(env, name, episodes, cfg.env.seed, tqdm(disable=True))
            for episode in range(episodes):
                ep = [r for r in lanes if r["episode"] == episode]
                rows.append({"agent": name, "seed": seed, "episode": episode,
                             **{k: float(np.mean([r[k] for r in ep])) for k in METRIC_KEYS}})
    truncate_metrics(run_dir / "metrics.jsonl", 0)
    with MetricsLog(run_dir / "metrics.jsonl") as log:
        for row in rows:
            log.write(row)
    return str(run_dir)


def _job_adapt(config: dict, seed: int, episodes: int, train_dirs: dict, out: str) -> str:
    """Adaptation on the held-out tasks for every adapter; same tasks for all (same seed)."""
    _one_thread()
    cfg = _seeded(config, seed, env={"task_distribution": "test"})
    for label in ADAPTERS:
        run_dir = Path(out) / f"adapt-{label}-seed{seed}"
        if _complete(run_dir, episodes):
            continue
        agent = "ppo" if label.startswith("ppo") else label
        policy = None if label == "ppo_scratch" else _trained_policy(Path(train_dirs[agent]))
        adapt(cfg, agent, policy, episodes, run_dir, progress=False, label=label)
    return out


def _job_fixed(config: dict, seed: int, episodes: int, run_dir: str) -> str:
    """Baseline strength: PPO on one fixed task, throughput-only reward, then the oracle on that task."""
    _one_thread()
    cfg = _seeded(config, seed, network=THROUGHPUT_ONLY, env={"task_seed": 1000 + seed},
                  agent={"episodes": episodes})
    train(cfg, "ppo", Path(run_dir), progress=False)
    _job_references(to_dict(cfg), 0, 3, str(Path(run_dir) / "references"), "train", 1)
    return run_dir


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)


def _complete(run_dir: Path, episodes: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and len(read_metrics(path)) >= episodes


def _trained_policy(run_dir: Path) -> dict:
    return policy_of_checkpoint(load_checkpoint(run_dir / "checkpoints" / "latest.pt"))


# orchestration ------------------------------------------------------------------------------
def reproduce(source, quick: bool = False, num_seeds: int = 3, out_dir: str | None = None,
              workers: int | None = None) -> Path:
    """Run the whole experiment; returns the results folder."""
    from tqdm import tqdm

    config = load_config(source, QUICK if quick else None)
    plan = Plan(config, quick, num_seeds)
    out = Path(out_dir or Path(config.run.out_dir) / ("reproduce-quick" if quick else "reproduce"))
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cfg = to_dict(config)
    clock = time.perf_counter()
    workers = workers or min(os.cpu_count() or 1, num_seeds * len(AGENTS))
    train_dirs = {s: {a: str(runs / f"train-{a}-seed{s}") for a in AGENTS} for s in range(num_seeds)}
    cost = {"rnn_attention": 4, "rnn": 3, "maml": 2, "ppo": 2}          # longest first
    total = num_seeds * (len(AGENTS) * plan.train_episodes + 4)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool, \
            tqdm(total=total, desc="reproduce", unit="ep") as bar:
        pending = {}
        for agent in sorted(AGENTS, key=lambda a: -cost[a]):
            for s in range(num_seeds):
                pending[pool.submit(_job_train, cfg, agent, s, train_dirs[s][agent])] = ("train", s)
        for s in range(num_seeds):
            pending[pool.submit(_job_references, cfg, s, plan.reference_episodes, str(runs / f"reference-seed{s}"),
                                "train", config.env.episodes_per_task)] = ("other", s)
            pending[pool.submit(_job_references, cfg, s, plan.adapt_episodes, str(runs / f"reference-test-seed{s}"),
                                "test", plan.adapt_episodes)] = ("other", s)
            pending[pool.submit(_job_fixed, cfg, s, plan.fixed_episodes, str(runs / f"fixed-ppo-seed{s}"))] = ("other", s)
        trained = {s: 0 for s in range(num_seeds)}
        others = 0
        while pending:
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, s = pending.pop(fut)
                fut.result()
                if kind == "train":
                    trained[s] += 1
                    if trained[s] == len(AGENTS):
                        pending[pool.submit(_job_adapt, cfg, s, plan.adapt_episodes, train_dirs[s], str(runs))] = ("other", s)
                else:
                    others += 1
            lines = sum(_count_lines(Path(d) / "metrics.jsonl") for s in train_dirs for d in train_dirs[s].values())
            bar.n = lines + others
            bar.refresh()
    wall_s = time.perf_counter() - clock
    summary = collect(out, plan, config, wall_s, workers)
    write_outputs(out, plan, config, summary)
    return out


def _count_lines(path: Path) -> int:
    try:
        with open(path) as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


# aggregation --------------------------------------------------------------------------------
def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std())}


def collect(out: Path, plan: Plan, config: Config, wall_s: float, workers: int) -> dict:
    """Curves, end-of-training table, references, adaptation and baseline check, from the run folders."""
    runs = out / "runs"
    seeds = range(plan.num_seeds)
    curves, final = {}, {}
    for agent in AGENTS:
        per_seed = [read_metrics(runs / f"train-{agent}-seed{s}" / "metrics.jsonl") for s in seeds]
        length = min(len(rows) for rows in per_seed)
        arr = {k: np.array([[r[k] for r in rows[:length]] for rows in per_seed]) for k in METRIC_KEYS}  # [S, E]
        curves[agent] = {k: {"mean": v.mean(0).tolist(), "std": v.std(0).tolist()} for k, v in arr.items()}
        final[agent] = {k: _mean_std(v[:, -plan.tail:].mean(1)) for k, v in arr.items()}
    references = {}
    for name in REFERENCES:
        per_seed = {k: [np.mean([r[k] for r in read_metrics(runs / f"reference-seed{s}" / "metrics.jsonl")
                                 if r["agent"] == name]) for s in seeds] for k in METRIC_KEYS}
        references[name] = {k: _mean_std(v) for k, v in per_seed.items()}
    adaptation = {}
    for label in ADAPTERS:
        per_seed = [read_metrics(runs / f"adapt-{label}-seed{s}" / "metrics.jsonl") for s in seeds]
        adaptation[label] = {str(p): {k: _mean_std([rows[p][k] for rows in per_seed]) for k in METRIC_KEYS}
                             for p in plan.adapt_points}
    test_refs = {}
    for name in REFERENCES:
        per_seed = {k: [np.mean([r[k] for r in read_metrics(runs / f"reference-test-seed{s}" / "metrics.jsonl")
                                 if r["agent"] == name]) for s in seeds] for k in METRIC_KEYS}
        test_refs[name] = {k: _mean_std(v) for k, v in per_seed.items()}
    fixed = []
    for s in seeds:
        rows = read_metrics(runs / f"fixed-ppo-seed{s}" / "metrics.jsonl")
        refs = read_metrics(runs / f"fixed-ppo-seed{s}" / "references" / "metrics.jsonl")
        oracle = np.mean([r["throughput_mbps"] for r in refs if r["agent"] == "oracle"])
        ppo = np.mean([r["throughput_mbps"] for r in rows[-max(1, len(rows) // 10):]])
        fixed.append({"seed": s, "ppo_mbps": float(ppo), "oracle_mbps": float(oracle), "fraction": float(ppo / oracle)})
    return {"config": to_dict(config), "quick": plan.quick, "seeds": plan.num_seeds, "workers": workers,
            "wall_s": wall_s, "train_episodes": plan.train_episodes, "tail_episodes": plan.tail,
            "num_envs": config.env.num_envs, "curves": curves, "final": final, "references": references,
            "adaptation": adaptation, "test_references": test_refs, "adapt_points": list(plan.adapt_points),
            "fixed_task": fixed}


# outputs ------------------------------------------------------------------------------------
NAMES = {"ppo": "PPO", "maml": "MAML", "rnn": "RNN (RL²)", "rnn_attention": "RNN + attention",
         "ppo_finetune": "PPO fine-tuned", "ppo_scratch": "PPO from scratch", "random": "random",
         "max_power": "max power", "greedy": "greedy", "oracle": "per-band oracle"}
COLUMNS = PAPER_METRICS + ("blocked_unsafe", "return")
HEADERS = {"sinr_violations": "SINR viol./step", "throughput_mbps": "throughput (Mbit/s)",
           "latency_violations": "latency viol./step", "fairness": "Jain", "blocked_unsafe": "blocked unsafe / ep",
           "return": "return / ep"}


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _fraction(value: float, oracle: float) -> str:
    return "—" if abs(oracle) < 1e-12 else f"{value / oracle:.2f}"


def markdown_table(rows: dict[str, dict], oracle: dict) -> str:
    """Mean ± std over seeds, then each metric as a fraction of the oracle's."""
    head = "| | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(_fmt(stats[c]) for c in COLUMNS) + " |")
    lines += ["", "Fraction of the per-band oracle (agent mean / oracle mean):", "", head,
              "|---" * (len(COLUMNS) + 1) + "|"]
    for name, stats in rows.items():
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(
            _fraction(stats[c]["mean"], oracle[c]["mean"]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, plan: Plan, config: Config, summary: dict) -> None:
    from testbed.plots import plot_curves

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
    refs = {NAMES[n]: {k: summary["references"][n][k]["mean"] for k in PAPER_METRICS} for n in ("oracle", "random")}
    plot_curves(series, out / "fig3.png", references=refs, window=max(1, length // 24),
                title=f"Training on the task stream: mean over {plan.num_seeds} seeds ± 1 std "
                      f"({config.env.num_envs} networks per episode, moving average over {max(1, length // 24)} episodes)")
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
    test_refs = {NAMES[n]: {k: summary["test_references"][n][k]["mean"] for k in PAPER_METRICS}
                 for n in ("oracle", "random")}
    plot_curves(series, out / "adaptation.png", xlabel="adaptation episodes on a held-out task",
                references=test_refs, title="Online adaptation on held-out tasks: mean over seeds ± 1 std", marker="o")
    (out / "adaptation.md").write_text(adaptation_table(summary) + "\n")
    (out / "results.md").write_text(results_markdown(summary, table))


def adaptation_table(summary: dict) -> str:
    points = summary["adapt_points"]
    oracle = summary["test_references"]["oracle"]
    lines = []
    for key in ("throughput_mbps", "return", "sinr_violations", "latency_violations", "fairness"):
        lines += [f"**{HEADERS[key]}** after n adaptation episodes (mean ± std over seeds; "
                  f"oracle on the same tasks: {_fmt(oracle[key])})", "",
                  "| | " + " | ".join(f"n={p}" for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for label, per_point in summary["adaptation"].items():
            lines.append(f"| {NAMES[label]} | " + " | ".join(_fmt(per_point[str(p)][key]) for p in points) + " |")
        lines.append("")
    return "\n".join(lines)


def _claims(summary: dict) -> list[str]:
    """The paper's claims, checked against the measured numbers."""
    final, out = summary["final"], []
    tput = {a: final[a]["throughput_mbps"]["mean"] for a in AGENTS}
    best = max(tput, key=tput.get)
    out.append(f"- *The attention agent reaches the highest throughput*: {'holds' if best == 'rnn_attention' else 'does not hold'}"
               f" (highest at the end of training: {NAMES[best]}, {tput[best]:.1f} Mbit/s).")
    meta = [a for a in AGENTS if a != "ppo"]
    beaten = [a for a in meta if tput[a] > tput["ppo"] + final["ppo"]["throughput_mbps"]["std"]]
    out.append(f"- *Every meta-learner beats PPO on throughput*: {'holds' if len(beaten) == len(meta) else 'does not hold'}"
               f" (PPO {tput['ppo']:.1f} Mbit/s; clearly above it, by more than PPO's std over seeds: "
               f"{', '.join(NAMES[a] for a in beaten) or 'none'}).")
    for key, word in (("sinr_violations", "SINR"), ("latency_violations", "latency")):
        ppo = final["ppo"][key]["mean"]
        cuts = {a: 1 - final[a][key]["mean"] / ppo for a in meta} if ppo > 0 else {}
        ok = cuts and all(c >= 0.5 for c in cuts.values())
        out.append(f"- *Meta-learners cut {word} violations by 50 % or more against PPO*: {'holds' if ok else 'does not hold'}"
                   f" (reduction: " + ", ".join(f"{NAMES[a]} {100 * c:.0f} %" for a, c in cuts.items()) + ").")
    jain = {a: final[a]["fairness"]["mean"] for a in AGENTS}
    out.append(f"- *Jain's index ≥ 0.7 for the meta-learners*: "
               f"{'holds' if all(jain[a] >= 0.7 for a in meta) else 'does not hold'} ("
               + ", ".join(f"{NAMES[a]} {jain[a]:.2f}" for a in AGENTS) + ").")
    oracle = summary["references"]["oracle"]["throughput_mbps"]["mean"]
    out.append(f"- *About 97 % of exhaustive search*: attention agent at {tput['rnn_attention'] / oracle:.0%} "
               f"of the per-band oracle's throughput (best agent {tput[best] / oracle:.0%}).")
    return out


def results_markdown(summary: dict, table: str) -> str:
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
            f"{NAMES[l]} {adapt[l][last]['throughput_mbps']['mean'] - adapt[l][first]['throughput_mbps']['mean']:+.1f} Mbit/s"
            for l in ADAPTERS) + ".", "",
    ]
    return "\n".join(lines)
