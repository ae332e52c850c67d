"""How much knowing the hidden hardware parameters is worth to a privileged heuristic, per reward
definition and task family: the value of information a learner could at best recover.

The heuristic (``testbed.policies.switch_off_levels``: per band the level combination with the
largest predicted throughput, then every link predicted under γ_min + margin switched off) knows
the gains and the schedule; it predicts with the true PA and access-path model (informed) or with
ideal hardware (uninformed, the best of margins 0, 5, 10 dB). Each row: 64 networks of the paper
preset, 100 steps, seed 0; returns per episode, and the ratio of informed to uninformed return
above random's on the same networks; the per-band oracle (the informed heuristic without the
switch-off) for scale. Prints a Markdown table. About 15 s on this machine.

    python benchmarks/value_of_information.py
"""
from __future__ import annotations

import math

import torch

from sim.network import SimNetwork
from testbed.config import load_config
from testbed.policies import switch_off_levels

FAMILIES = {"PA only": {}, "PA + access offsets [-20, 0] dB": {"tasks": {"access_gain_offset_db": [-20.0, 0.0]}}}
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
    print("| reward's fairness | family | random | per-band oracle | uninformed heuristic | informed heuristic | "
          "above random, informed / uninformed |")
    print("|---|---|---|---|---|---|---|")
    for fairness in ("links", "ues"):
        for family, overrides in FAMILIES.items():
            over = {**overrides, "network": {"fairness_over": fairness}}
            gen = torch.Generator().manual_seed(0)
            shape = (64, NETWORK.num_bs, NETWORK.num_bands)
            rand = episode_return(over, lambda net: torch.randint(0, NETWORK.num_levels, shape, generator=gen))
            plain = max(episode_return(over, lambda net, m=m: switch_off_levels(net, False, m)) for m in MARGINS_DB)
            informed = episode_return(over, lambda net: switch_off_levels(net, True, 0.0))
            oracle = episode_return(over, lambda net: switch_off_levels(net, True, -math.inf))   # nothing off
            print(f"| {fairness} | {family} | {rand:.1f} | {oracle:.1f} | {plain:.1f} | {informed:.1f} | "
                  f"{(informed - rand) / (plain - rand):.2f} |")


if __name__ == "__main__":
    main()
