"""Per-episode metrics from the env's step ``info``: the paper's four (SINR violations,
throughput, latency violations, Jain's index) plus return and safety counts."""
from __future__ import annotations

import numpy as np

# info key -> (episode metric name, how steps combine)
METRICS = {
    "sinr_violations": ("sinr_violations", "mean"),
    "throughput_bps": ("throughput_mbps", "mean"),
    "latency_violations": ("latency_violations", "mean"),
    "fairness": ("fairness", "mean"),
    "blocked_unsafe": ("blocked_unsafe", "sum"),
    "executed_violations": ("executed_violations", "sum"),
}
PAPER_METRICS = ("sinr_violations", "throughput_mbps", "latency_violations", "fairness")


class EpisodeRecorder:
    """Accumulates step infos of N lock-step envs; ``finish`` returns one dict per env."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.sums = {key: np.zeros(self.num_envs) for key in METRICS}
        self.ret = np.zeros(self.num_envs)

    def add(self, reward: np.ndarray, info: dict) -> None:
        self.steps += 1
        self.ret += reward
        for key in METRICS:
            self.sums[key] += info[key]

    def finish(self) -> list[dict]:
        """Episode metrics per env, then a fresh start."""
        out = []
        for i in range(self.num_envs):
            row = {"return": float(self.ret[i])}
            for key, (name, how) in METRICS.items():
                total = self.sums[key][i]
                row[name] = float(total / self.steps if how == "mean" else total)
            row["throughput_mbps"] /= 1e6
            out.append(row)
        self.reset()
        return out


def summarise(rows: list[dict], keys=PAPER_METRICS + ("blocked_unsafe", "executed_violations", "return")) -> dict:
    """Mean and std over episodes of each metric."""
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys}
