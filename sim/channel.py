"""Per-step physics: AR(1) fading, incumbents, round-robin scheduling, SINR (Eq. 6), the
interference map (Eq. 7) and the power amplifier of the hardware family. All linear powers in W,
gains in dB or linear as named."""
from __future__ import annotations

import torch

from sim.units import scalar_like


def ar1_fading(prev_db: torch.Tensor, coherence: torch.Tensor, std_db: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """F_t = ρ F_{t-1} + sqrt(1 - ρ²) σ_f ε_t, ε ~ N(0, 1) (Eq. 5). ρ, σ_f broadcast over prev_db."""
    return ar1_step(prev_db, coherence, ar1_innovation_db(coherence, std_db), eps)


def ar1_innovation_db(coherence: torch.Tensor, std_db: torch.Tensor) -> torch.Tensor:
    """sqrt(1 - ρ²) σ_f: the std in dB of the AR(1) fading's innovation, fixed per task."""
    return torch.sqrt((1.0 - coherence * coherence).clamp_min(0.0)) * std_db


def ar1_step(prev_db: torch.Tensor, coherence: torch.Tensor, innovation_db: torch.Tensor,
             eps: torch.Tensor) -> torch.Tensor:
    """F_t = ρ F_{t-1} + (sqrt(1 - ρ²) σ_f) ε_t with the innovation std precomputed (``ar1_innovation_db``)."""
    return coherence * prev_db + innovation_db * eps


def incumbent_switch(on: torch.Tensor, uniform: torch.Tensor, p_on: torch.Tensor,
                     p_off: torch.Tensor) -> torch.Tensor:
    """One step of the on/off Markov chain: off→on w.p. p_on, on→off w.p. p_off."""
    return torch.where(on, uniform >= p_off, uniform < p_on)


def incumbent_rates(occupancy: torch.Tensor, on_steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Transition probabilities (p_on, p_off) of a chain with stationary occupancy π and mean on-time."""
    p_off = 1.0 / on_steps.clamp_min(1.0)
    p_on = (occupancy / (1.0 - occupancy).clamp_min(1e-6) * p_off).clamp(0.0, 1.0)
    return p_on, p_off


def round_robin(t: int, ue_by_rank: torch.Tensor, num_assoc: torch.Tensor, num_bands: int) -> torch.Tensor:
    """UE served by BS b on band k at step t: its ((t + k) mod n_b)-th UE; -1 if it has none.

    ue_by_rank [N, B, U], num_assoc [N, B] -> served [N, B, K] long.
    """
    table, count = round_robin_table(ue_by_rank, num_assoc)
    return scheduled_ue(t, table, count, torch.arange(num_bands, device=ue_by_rank.device))


def round_robin_table(ue_by_rank: torch.Tensor, num_assoc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``scheduled_ue`` reads, fixed per task: the UEs by rank [N, B, U] with -1 for BSs that have
    none, and the cycle length max(1, n_b) [N, B, 1]."""
    table = torch.where(num_assoc.unsqueeze(-1) > 0, ue_by_rank, torch.full_like(ue_by_rank, -1))
    return table, num_assoc.clamp_min(1).unsqueeze(-1)


def scheduled_ue(t: int, table: torch.Tensor, count: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Round robin at step t from ``round_robin_table``: entry (t + k) mod n_b of each BS's row, for the
    band indices ``band`` [K] = 0..K-1. -> served [N, B, K] long."""
    return table.gather(2, (t + band).view(1, 1, -1) % count)


def link_gains(gain_lin: torch.Tensor, served_ue: torch.Tensor) -> torch.Tensor:
    """g(b', u(b,k)): gain from every BS b' to the UE served on link (b,k).

    gain_lin [N, B, U], served_ue [N, B, K] -> [N, B', B, K] (0 where no UE is served).
    """
    n, num_bs, _ = gain_lin.shape
    idx = served_ue.clamp_min(0).view(n, 1, -1).expand(n, num_bs, -1)
    g = gain_lin.gather(2, idx).view(n, num_bs, *served_ue.shape[1:])
    return g * (served_ue >= 0).unsqueeze(1)


def sinr_of_received(rx_w, external_w, noise_w):
    """Eq. 6 from received powers: SINR(b,k) = S(b,b,k) / (Σ_{b'≠b} S(b',b,k) + X + N0), linear.

    rx_w [..., B', B, K]: power from BS b' at the receiver of link (b,k); external_w and noise_w
    broadcast against [..., B, K]. The one SINR formula of the project: the simulator, the
    reference policies and the pilot estimator (``hardware.dsp``) all call it. Works on torch
    tensors and numpy arrays.
    """
    signal = rx_w.diagonal(0, -3, -2).swapaxes(-1, -2)      # [..., B, K]
    return signal / (rx_w.sum(-3) - signal + external_w + noise_w)


def sinr(power_w: torch.Tensor, gain_lin: torch.Tensor, served_ue: torch.Tensor,
         external_w: torch.Tensor, noise_w: float) -> torch.Tensor:
    """Eq. 6, linear SINR of every link (b,k); 0 where the link is off or serves nobody.

    power_w [N, B, K] executed p̂; gain_lin [N, B, U]; served_ue [N, B, K];
    external_w [N, B, K] incumbent power at the served UE, X_ue(u(b,k), k) = X_bs(b, k).
    """
    rx = power_w.unsqueeze(2) * link_gains(gain_lin, served_ue)   # [N, B', B, K] received at u(b,k) from b'
    return sinr_of_received(rx, external_w, scalar_like(noise_w, rx))


def interference_map(power_w: torch.Tensor, bs_gain_lin: torch.Tensor,
                     external_w: torch.Tensor) -> torch.Tensor:
    """Eq. 7: I(b,k) = Σ_{b'≠b} p̂(b',k) h(b',b) + X_bs(b,k), in W. [N, B, K].

    bs_gain_lin [N, B', B] must be 0 on its diagonal.
    """
    return torch.bmm(bs_gain_lin.transpose(1, 2), power_w) + external_w


def pa_output_dbm(level_dbm: torch.Tensor, gain_offset_db: torch.Tensor,
                  compression_dbm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardware-family PA: radiated power min(P + o, P_c) in dBm and overdrive max(0, P + o − P_c) in dB.

    level_dbm: nominal power P of the executed level (−inf for off); o and P_c broadcast against it.
    With o <= 0 the radiated power never exceeds the nominal one.
    """
    driven = level_dbm + gain_offset_db
    return torch.minimum(driven, compression_dbm), (driven - compression_dbm).clamp_min(0.0)


def pa_sdr_db(overdrive_db: torch.Tensor, sdr_max_db: float, slope_db: float) -> torch.Tensor:
    """Signal-to-distortion ratio of a PA driven ``overdrive_db`` above compression: SDR_max − s·Δ, in dB."""
    return scalar_like(sdr_max_db, overdrive_db) - scalar_like(slope_db, overdrive_db) * overdrive_db


def distortion_limited(sinr_lin: torch.Tensor, sdr_lin: torch.Tensor) -> torch.Tensor:
    """SINR with the transmitter's own distortion as extra noise: 1 / (1/SINR + 1/SDR), linear (0 stays 0)."""
    return sinr_lin * sdr_lin / (sinr_lin + sdr_lin)
