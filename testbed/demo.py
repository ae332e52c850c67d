"""`testbed demo`: the reference policies on one config, a table of the paper's metrics, a run folder."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from testbed.config import Config, save_config
from testbed.env import SpectrumVectorEnv
from testbed.metrics import HEADERS, METRIC_KEYS, episode_rows, summarise
from testbed.plots import count, plot_bars
from testbed.policies import make_policy


def new_run_dir(config: Config, name: str) -> Path:
    """A fresh folder runs/<name>-<time> with the resolved config.yaml in it."""
    root = Path(config.run.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    i = 1
    while path.exists():
        path = root / f"{name}-{stamp}-{i}"
        i += 1
    path.mkdir(parents=True)
    save_config(config, path / "config.yaml")
    return path


def run_policy(env: SpectrumVectorEnv, name: str, episodes: int, seed: int, bar: tqdm) -> list[dict]:
    """``episodes`` rounds of N parallel episodes; every policy sees the same tasks and draws."""
    policy = make_policy(name, env, seed)
    rows = []
    obs, info = env.reset(seed=seed)
    for episode in range(episodes):
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs, info))
            done = bool(truncated.all() or terminated.all())
            bar.update(1)
        for i, row in enumerate(episode_rows(info)):
            rows.append({"policy": name, "episode": episode, "env": i, **row})
    return rows


def format_table(summary: dict[str, dict], samples: int) -> str:
    """A markdown table: one row per policy, mean ± std over its ``samples`` (network, episode) pairs
    of each metric ('± n/a' for one sample), throughput vs the oracle."""
    oracle = summary.get("oracle", {}).get("throughput_mbps", {}).get("mean")
    head = "| policy | " + " | ".join(HEADERS[c] for c in METRIC_KEYS) + (" | throughput / oracle |" if oracle else " |")
    lines = [head, "|" + "---|" * (len(METRIC_KEYS) + 1 + bool(oracle))]
    for name, stats in summary.items():
        cells = [f"{stats[c]['mean']:.3g} ± " + ("n/a" if samples == 1 else f"{stats[c]['std']:.2g}")
                 for c in METRIC_KEYS]
        if oracle:
            cells.append(f"{stats['throughput_mbps']['mean'] / oracle:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def averaged(episodes: int, num_envs: int) -> str:
    """What the demo's numbers average."""
    return (f"mean ± std over {count(episodes, 'episode')} × {count(num_envs, 'network')} = "
            f"{count(episodes * num_envs, 'network-episode')} per policy")


def run_demo(config: Config, episodes: int | None = None) -> Path:
    """Run every reference policy in ``config.run.policies``; returns the run folder."""
    episodes = episodes or config.run.episodes
    run_dir = new_run_dir(config, "demo")
    env = SpectrumVectorEnv(config)
    steps = episodes * config.network.episode_steps * len(config.run.policies)
    rows = []
    try:
        with tqdm(total=steps, desc="demo", unit="step") as bar:
            for name in config.run.policies:
                rows += run_policy(env, name, episodes, config.env.seed, bar)
    finally:
        env.close()
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    summary = {name: summarise([r for r in rows if r["policy"] == name]) for name in config.run.policies}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    caption = averaged(episodes, config.env.num_envs)
    plot_bars(summary, run_dir / "metrics.png",
              f"Reference policies: {caption}; error bars ±1 std, clipped to each metric's physical range")
    table = format_table(summary, episodes * config.env.num_envs)
    (run_dir / "table.md").write_text(f"**Reference policies: {caption}**\n\n{table}\n")
    print(f"\n{caption}\n")
    print(table)
    print(f"\nrun folder: {run_dir}")
    return run_dir
