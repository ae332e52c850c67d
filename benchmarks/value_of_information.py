"""How much knowing the hidden hardware parameters is worth to a privileged heuristic, per reward
definition and task family: the value of information a learner could at best recover.

The heuristic (``testbed.policies.switch_off_levels``: per band the level combination with the
largest predicted throughput, then every link predicted under γ_min + margin switched off) knows
the gains and the schedule; it predicts with the true PA and access-path model (informed) or with
ideal hardware (uninformed, the best of margins 0, 5, 10 dB). Each row: 64 networks of the paper
preset (its training or held-out tasks; "PA only" sets the access offsets to 0 dB), 100 steps,
seed 0; returns per episode, and the ratio of informed to uninformed return above random's on
the same networks; the per-band oracle (the informed heuristic without the switch-off) for scale. Prints a Markdown table. About 30 s on this machine.

    python benchmarks/value_of_information.py
"""
from __future__ import annotations

import itertools
import math

import torch

from sim.network import SimNetwork
from testbed.config import load_config
from testbed.policies import switch_off_levels

NO_ACCESS = {"access_gain_offset_db": [0.0, 0.0]}
FAMILIES = {"PA only": {"tasks": NO_ACCESS, "test_tasks": NO_ACCESS}, "PA + access offsets [-20, 0] dB (preset)": {}}
DISTRIBUTIONS = {"training": "train", "held-out": "test"}
MARGINS_DB = (0.0, 5.0, 10.0)
NETWORK = load_config("paper").network


def episode_return(overrides: dict, act) -> float:
    config = load_config("paper", overrides)
    net = SimNetwork(config.network, config.task_ranges, 64, seed=0)
    net.reset()
    total = torch.zeros(64)
    for _ in range(config.network.episode_steps):
        total += net.step(act(net)).reward
    return total.mean().item()


def main() -> None:
    print("| reward's fairness | family | tasks | random | per-band oracle | uninformed heuristic | informed heuristic | "
          "above random, informed / uninformed |")
    print("|---|---|---|---|---|---|---|---|")
    for fairness, (family, overrides), (dist, name) in itertools.product(("links", "ues"), FAMILIES.items(),
                                                                          DISTRIBUTIONS.items()):
        over = {**overrides, "network": {"fairness_over": fairness}, "env": {"task_distribution": name}}
        gen = torch.Generator().manual_seed(0)
        shape = (64, NETWORK.num_bs, NETWORK.num_bands)
        rand = episode_return(over, lambda net: torch.randint(0, NETWORK.num_levels, shape, generator=gen))
        plain = max(episode_return(over, lambda net, m=m: switch_off_levels(net, False, m)) for m in MARGINS_DB)
        informed = episode_return(over, lambda net: switch_off_levels(net, True, 0.0))
        oracle = episode_return(over, lambda net: switch_off_levels(net, True, -math.inf))   # nothing off
        print(f"| {fairness} | {family} | {dist} | {rand:.1f} | {oracle:.1f} | {plain:.1f} | {informed:.1f} | "
              f"{(informed - rand) / (plain - rand):.2f} |")


if __name__ == "__main__":
    main()
