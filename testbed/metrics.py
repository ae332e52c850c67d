"""Per-episode metrics from the env's step ``info``: the paper's four (SINR violations,
throughput, latency violations, Jain's index) plus return and safety counts; their keys, and
the names tables and plots show for metrics and agents."""
from __future__ import annotations

import numpy as np
import torch

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
METRIC_KEYS = PAPER_METRICS + ("blocked_unsafe", "executed_violations", "return")   # every episode metric
TABLE_KEYS = PAPER_METRICS + ("blocked_unsafe", "return")   # the columns of the reproduction's tables

# the physical range (low, high) of each episode metric, None = unbounded: error bars and bands are clipped to it
RANGES = {"sinr_violations": (0.0, None), "throughput_mbps": (0.0, None), "latency_violations": (0.0, None),
          "fairness": (0.0, 1.0), "blocked_unsafe": (0.0, None), "executed_violations": (0.0, None),
          "return": (None, None)}

TITLES = {"sinr_violations": "SINR violations / step", "throughput_mbps": "Throughput (Mbit/s)",
          "latency_violations": "Latency violations / step", "fairness": "Jain's index",
          "return": "Return / episode", "losses/policy": "Policy loss (clipped surrogate)",
          "losses/value": "Value loss", "losses/entropy": "Entropy (nats)", "losses/approx_kl": "Approx. KL",
          "losses/clipfrac": "Clip fraction", "losses/outer": "MAML outer loss"}   # plot panels
HEADERS = {"sinr_violations": "SINR viol./step", "throughput_mbps": "throughput (Mbit/s)",
           "latency_violations": "latency viol./step", "fairness": "Jain", "blocked_unsafe": "blocked unsafe / ep",
           "executed_violations": "executed viol. / ep", "return": "return / ep"}   # table columns
DISPLAY_NAMES = {"ppo": "PPO", "maml": "MAML", "rnn": "RNN (RL²)", "rnn_attention": "RNN + attention",
                 "ppo_finetune": "PPO fine-tuned", "ppo_informed": "informed PPO", "ppo_scratch": "PPO from scratch", "random": "random",
                 "max_power": "max power", "greedy": "greedy", "oracle": "per-band oracle",
                 "switch_off": "switch-off"}   # agents and policies

ACTION_NAMES = {"argmax": "argmax", "sample": "sampled"}   # an evaluated agent's action modes, as tables show them


def display_name(policy: str) -> str:
    """The name tables show for an agent, a reference policy, or an agent in an evaluation action mode
    ('ppo/argmax' -> 'PPO (argmax)')."""
    agent, _, actions = policy.partition("/")
    return DISPLAY_NAMES.get(agent, agent) + (f" ({ACTION_NAMES[actions]})" if actions else "")


class EpisodeRecorder:
    """Accumulates the step results of N lock-step envs on their device (nothing leaves it per
    step); ``finish`` returns one dict per env."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.sums: torch.Tensor | None = None   # [1 + len(METRICS), N] float64: the return, then METRICS' keys

    def add(self, reward: torch.Tensor, result) -> None:
        """``reward`` [N]; ``result``: the step's ``sim.network.StepResult`` (its per-env metric tensors).
        The step's values are stacked in float32 (exact: the counts are far below 2**24) and summed in float64."""
        self.steps += 1
        value = torch.stack([reward] + [getattr(result, key) for key in METRICS]).double()
        self.sums = value if self.sums is None else self.sums + value

    def finish(self) -> list[dict]:
        """Episode metrics per env, then a fresh start."""
        ret, *columns = self.sums.cpu().numpy()
        sums = dict(zip(METRICS, columns))
        out = []
        for i in range(self.num_envs):
            row = {"return": float(ret[i])}
            for key, (name, how) in METRICS.items():
                total = sums[key][i]
                row[name] = float(total / self.steps if how == "mean" else total)
            row["throughput_mbps"] /= 1e6
            out.append(row)
        self.reset()
        return out


def episode_rows(info: dict) -> list[dict]:
    """The finished episode's metrics per env lane, from the ``info`` of its last step
    (``final_info["episode_metrics"]``, which the env batches as Gymnasium's vector envs do)."""
    metrics = info["final_info"]["episode_metrics"]
    return [{key: float(metrics[key][i]) for key in METRIC_KEYS} for i in range(len(metrics["return"]))]


def lane_means(rows: list[dict]) -> dict:
    """Mean over rows (the env lanes of one episode) of each metric."""
    return {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}


def summarise(rows: list[dict]) -> dict:
    """Mean and std over episodes of each metric."""
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in METRIC_KEYS}
