"""The batched network: N independent IAB networks stepped together (docs/model.md).

Step t, for every backend:
  1. the safety filter (Eq. 4) reads the interference map prepared at the end of step t-1;
  2. round-robin scheduling; gains = mean gains + current fading;
  3. SINR of every link (``link_sinr``: analytic here, measured on radios), from the power the PAs
     radiate (``radiated_w``: the executed power, or in the hardware family its PA response);
  4. rates, queues, throughput, Jain, cost, penalty, reward;
  5. fading and incumbents advance; ``sense_external_w`` gives the external interference of
     step t+1 (sensed with TX off on radios) and ``interference_map_w`` the map for the next filter,
     I(b,k) = Σ_{b'≠b} p̂_t(b',k) h(b',b) + X_{t+1}(b,k) (Eq. 7; its BS part measured on radios).
The step is a deterministic function of its ``StepNoise``, so batched and single runs fed the
same draws agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from sim import channel, reward as rw
from sim.params import NetworkParams, TaskRanges
from sim.safety import SafePowers, apply_safety_filter, safety_mask
from sim.tasks import Tasks, sample_tasks
from sim.units import db_to_lin, dbm_to_w, lin_to_db, scalar_like


@dataclass(frozen=True)
class NetworkState:
    """Time-varying state of N networks."""

    t: int                        # step within the episode
    fading_db: torch.Tensor       # [N, B, U]
    bs_fading_db: torch.Tensor    # [N, B, B] symmetric
    incumbent_on: torch.Tensor    # [N, B, K] bool
    external_w: torch.Tensor      # [N, B, K] X_bs of the coming step
    map_w: torch.Tensor           # [N, B, K] interference map the next filter reads
    queue_bits: torch.Tensor      # [N, U]
    prev_power_w: torch.Tensor    # [N, B, K] executed power of the last step
    prev_level: torch.Tensor      # [N, B, K] long
    delay_s: torch.Tensor         # [N, U]
    rate_bps: torch.Tensor        # [N, U]

    def select(self, index) -> "NetworkState":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "t"})


@dataclass(frozen=True)
class StepNoise:
    """All random draws of one step."""

    normal: torch.Tensor          # [N, B*U + B*B] ε of the fading
    uniform: torch.Tensor         # [N, B, K] incumbent transitions
    arrivals_bits: torch.Tensor   # [N, U] A_u

    def select(self, index) -> "StepNoise":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return StepNoise(self.normal[index], self.uniform[index], self.arrivals_bits[index])


@dataclass(frozen=True)
class StepResult:
    """What one step produced, per env. Shapes with leading N."""

    safe: SafePowers
    requested_level: torch.Tensor   # [N, B, K]
    map_w: torch.Tensor             # [N, B, K] map the filter read
    gain_db: torch.Tensor           # [N, B, U] gains used for this step's SINR
    served_ue: torch.Tensor         # [N, B, K] long, -1 where none
    external_w: torch.Tensor        # [N, B, K] X_bs this step
    external_ue_w: torch.Tensor     # [N, U, K] X_ue this step
    sinr_lin: torch.Tensor          # [N, B, K] 0 where off
    active: torch.Tensor            # [N, B, K] bool, p̂ > 0 and a UE is served
    measured: torch.Tensor          # [N, B, K] bool, SINR measured on radios (False in the simulator)
    rate_bps: torch.Tensor          # [N, U]
    delay_s: torch.Tensor           # [N, U]
    throughput_bps: torch.Tensor    # [N]
    fairness: torch.Tensor          # [N]
    cost: torch.Tensor              # [N]
    penalty: torch.Tensor           # [N]
    reward: torch.Tensor            # [N]
    sinr_violations: torch.Tensor   # [N]
    latency_violations: torch.Tensor  # [N]
    blocked_unsafe: torch.Tensor    # [N]
    executed_violations: torch.Tensor  # [N], must be 0
    radiated_w: torch.Tensor        # [N, B, K] power the PAs radiated (the executed power in the standard family)


@dataclass(frozen=True)
class TaskConstants:
    """The per-task tensors every step reads, computed once per batch of tasks (``SimNetwork.constants``)."""

    tasks: Tasks                     # the tasks they were computed from
    coherence: torch.Tensor          # [N, 1, 1] ρ
    innovation_db: torch.Tensor      # [N, 1, 1] sqrt(1 - ρ²) σ_f
    p_on: torch.Tensor               # [N, 1, 1] incumbent off→on probability
    p_off: torch.Tensor              # [N, 1, 1] incumbent on→off probability
    rr_table: torch.Tensor           # [N, B, U] UEs by rank, -1 for BSs without UEs (``channel.round_robin_table``)
    rr_count: torch.Tensor           # [N, B, 1] round-robin cycle length
    assoc_index: torch.Tensor        # [N, U, K] serving BS of each UE, repeated over the bands
    packets_per_step: torch.Tensor   # [N, U] mean arrivals λ_u Δt / S in packets
    pa_power_w: torch.Tensor | None  # [L, N, B, K] radiated power of each level in W (hardware family; else None)
    pa_sdr_lin: torch.Tensor | None  # [L, N, B, K] SDR (linear) of each level (hardware family; else None)
    access_gain_lin: torch.Tensor | None  # [N, B, K] a(b,k) linear (hardware family; else None)

    @staticmethod
    def of(tasks: Tasks, p: NetworkParams,
           pa_by_level: tuple[torch.Tensor, torch.Tensor] | None = None) -> "TaskConstants":
        """``pa_by_level``: the PA response of each level (``SimNetwork.pa_by_level``), hardware family only."""
        n = tasks.num_envs
        p_on, p_off = channel.incumbent_rates(tasks.incumbent_occupancy, tasks.incumbent_on_steps)
        coherence, std = tasks.coherence.view(n, 1, 1), tasks.fading_std_db.view(n, 1, 1)
        rr_table, rr_count = channel.round_robin_table(tasks.ue_by_rank, tasks.num_assoc)
        pa_power_w, pa_sdr_lin = pa_by_level or (None, None)
        return TaskConstants(
            tasks=tasks, coherence=coherence, innovation_db=channel.ar1_innovation_db(coherence, std),
            p_on=p_on.view(n, 1, 1), p_off=p_off.view(n, 1, 1), rr_table=rr_table, rr_count=rr_count,
            assoc_index=tasks.assoc.unsqueeze(-1).expand(-1, -1, p.num_bands),
            packets_per_step=tasks.traffic_bps * (p.step_s / p.packet_bits),
            pa_power_w=pa_power_w, pa_sdr_lin=pa_sdr_lin,
            access_gain_lin=None if tasks.access_gain_offset_db is None else db_to_lin(tasks.access_gain_offset_db),
        )


class SimNetwork:
    """N analytic networks. Measured backends subclass it and override the hooks ``sense_external_w``,
    ``link_sinr`` and ``interference_map_w``; everything else is shared."""

    def __init__(self, params: NetworkParams, ranges: TaskRanges, num_envs: int,
                 device: str | torch.device = "cpu", seed: int = 0, task_seed: int | None = None,
                 compiled: bool = False):
        """``compiled``: the step and the observation run through ``torch.compile`` (one graph each,
        equal to the eager ones up to float32 rounding; the first call compiles, some seconds). Only
        for this class: measured backends do radio I/O inside the step."""
        self.params = params
        self.ranges = ranges
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.task_seed = task_seed
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.level_power_w = torch.tensor(params.level_power_w, dtype=torch.float32, device=self.device)
        self.level_power_dbm = torch.tensor(params.level_power_dbm, dtype=torch.float32, device=self.device)
        self.band_index = torch.arange(params.num_bands, device=self.device)
        self.tasks: Tasks | None = None
        self._constants: TaskConstants | None = None
        self.state: NetworkState | None = None
        if compiled and type(self) is not SimNetwork:
            raise ValueError(f"compiled: only the simulator's step compiles, not {type(self).__name__}'s")
        if compiled:                          # instance attributes in front of the eager methods
            self.step_with_noise = torch.compile(self.step_with_noise)
            self.observation = torch.compile(self.observation)

    # --- tasks and episodes ----------------------------------------------------------
    def sample_tasks(self, num: int) -> Tasks:
        """Fresh tasks; with ``task_seed`` set, every env gets the same fixed task."""
        if self.task_seed is None:
            return sample_tasks(self.params, self.ranges, num, self.gen, self.device)
        gen = torch.Generator(device=self.device).manual_seed(self.task_seed)
        one = sample_tasks(self.params, self.ranges, 1, gen, self.device)
        return one.select(torch.zeros(num, dtype=torch.long, device=self.device))

    def reset(self, seed: int | None = None, new_task: bool = True) -> None:
        """Start a new episode in every env; new tasks unless ``new_task`` is False."""
        if seed is not None:
            self.gen.manual_seed(seed)
        if new_task or self.tasks is None:
            self.tasks = self.sample_tasks(self.num_envs)
        self.state = self.initial_state(self.tasks)

    def initial_state(self, tasks: Tasks) -> NetworkState:
        """Stationary fading and incumbents, empty queues, nothing transmitted yet."""
        p, n, dev = self.params, tasks.num_envs, self.device
        b, u, k = p.num_bs, p.num_ue, p.num_bands
        std = tasks.fading_std_db.view(n, 1, 1)
        normal = torch.randn(n, b * u + b * b, generator=self.gen, device=dev)
        bs_eps = normal[:, b * u:].view(n, b, b)
        on = torch.rand(n, b, k, generator=self.gen, device=dev) < tasks.incumbent_occupancy.view(n, 1, 1)
        zeros_bk = torch.zeros(n, b, k, device=dev)
        zeros_u = torch.zeros(n, u, device=dev)
        self.state = NetworkState(
            t=0,
            fading_db=normal[:, : b * u].view(n, b, u) * std,
            bs_fading_db=(bs_eps + bs_eps.transpose(1, 2)) / 2**0.5 * std,
            incumbent_on=on,
            external_w=zeros_bk, map_w=zeros_bk,
            queue_bits=zeros_u, prev_power_w=zeros_bk,
            prev_level=torch.zeros(n, b, k, dtype=torch.long, device=dev),
            delay_s=zeros_u, rate_bps=zeros_u,
        )
        external = self.sense_external_w()
        self.state = replace(self.state, external_w=external, map_w=external)
        return self.state

    @property
    def constants(self) -> TaskConstants:
        """The per-task tensors of ``self.tasks`` (recomputed when ``self.tasks`` is replaced)."""
        if self._constants is None or self._constants.tasks is not self.tasks:
            hardware = self.params.task_family == "hardware"
            self._constants = TaskConstants.of(self.tasks, self.params, self.pa_by_level() if hardware else None)
        return self._constants

    # --- hooks (overridden by measured backends) ---------------------------------------
    def sense_external_w(self) -> torch.Tensor:
        """External interference X_bs [N, B, K] in W for the coming step: the incumbents."""
        s = self.state
        return s.incumbent_on * self.tasks.incumbent_power_w.view(-1, 1, 1)

    def interference_map_w(self, safe: SafePowers, radiated_w: torch.Tensor, external_w: torch.Tensor) -> torch.Tensor:
        """The map [N, B, K] in W the next filter reads (Eq. 7), from this step's radiated powers, the
        BS-to-BS gains of the coming step and its external interference ``external_w``."""
        return channel.interference_map(radiated_w, self._bs_gain_lin(), external_w)

    def mask(self) -> torch.Tensor:
        """The safety mask the next step's filter applies, 1[I_prev <= I_max]. [N, B, K] bool."""
        return safety_mask(self.state.map_w, self.params.i_max_w)

    def link_sinr(self, safe: SafePowers, served_ue: torch.Tensor, gain_db: torch.Tensor,
                  external_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear SINR [N, B, K] of every link and which were measured [N, B, K] bool (Eq. 6, from the
        radiated powers; in the hardware family limited by each link's own PA distortion)."""
        power_w, sdr_lin = self.radiated_w(safe)
        value = channel.sinr(self.toward_ues_w(power_w), db_to_lin(gain_db), served_ue, external_w, self.params.noise_w)
        if sdr_lin is not None:
            value = channel.distortion_limited(value, sdr_lin)
        return value, torch.zeros_like(safe.mask)

    # --- the power amplifiers ----------------------------------------------------------
    def pa_response(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hardware family: radiated power in W and SDR (linear) of levels [..., N, B, K] (leading
        candidate axes broadcast), from the tasks' hidden PA gain offsets and compression points."""
        t, p = self.tasks, self.params
        out_dbm, over_db = channel.pa_output_dbm(self.level_power_dbm[level], t.pa_gain_offset_db,
                                                 t.pa_compression_dbm.unsqueeze(-1))
        return dbm_to_w(out_dbm), db_to_lin(channel.pa_sdr_db(over_db, p.pa_sdr_max_db, p.pa_sdr_slope_db))

    def pa_by_level(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``pa_response`` of every level on every link of ``self.tasks``: radiated power in W and SDR
        (linear), [L, N, B, K] each. Each level is evaluated over [N, B, K] as a step's levels are,
        so a lookup equals the step's own call bit for bit."""
        shape = (self.tasks.num_envs, self.params.num_bs, self.params.num_bands)
        levels = [self.pa_response(torch.full(shape, level, device=self.device))
                  for level in range(self.params.num_levels)]
        return torch.stack([power for power, _ in levels]), torch.stack([sdr for _, sdr in levels])

    def toward_ues_w(self, radiated_w: torch.Tensor) -> torch.Tensor:
        """Radiated powers [..., N, B, K] in W as the UEs' paths take them: times the access gains
        a(b,k) in the hardware family (the BS-to-BS paths of the map take ``radiated_w`` as is)."""
        if self.params.task_family == "standard":
            return radiated_w
        return radiated_w * self.constants.access_gain_lin

    def level_response(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Radiated power in W and SDR (linear) of candidate levels [..., N, B, K] (leading axes
        broadcast): the nominal power without distortion (None) in the standard family, the PA
        response in the hardware family. What the privileged reference policies score."""
        if self.params.task_family == "standard":
            return self.level_power_w[level], None
        return self.pa_response(level)

    def radiated_w(self, safe: SafePowers) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Power [N, B, K] in W the PAs radiate for the executed powers, and the links' SDR (linear;
        None in the standard family, whose PAs are ideal: they radiate the executed power)."""
        if self.params.task_family == "standard":
            return safe.power_w, None
        c, index = self.constants, safe.level.unsqueeze(0)
        return c.pa_power_w.gather(0, index).squeeze(0), c.pa_sdr_lin.gather(0, index).squeeze(0)

    # --- stepping ----------------------------------------------------------------------
    def draw_noise(self) -> StepNoise:
        """Every random draw of one step, in three calls."""
        p, n, dev = self.params, self.num_envs, self.device
        b, u, k = p.num_bs, p.num_ue, p.num_bands
        normal = torch.randn(n, b * u + b * b, generator=self.gen, device=dev)
        uniform = torch.rand(n, b, k, generator=self.gen, device=dev)
        packets = torch.poisson(self.constants.packets_per_step, generator=self.gen)
        return StepNoise(normal, uniform, packets * p.packet_bits)

    def step(self, level: torch.Tensor) -> StepResult:
        """Advance every env by one step with requested levels ``level`` [N, B, K]."""
        return self.step_with_noise(level, self.draw_noise())

    def step_with_noise(self, level: torch.Tensor, noise: StepNoise) -> StepResult:
        p, tasks, s, c = self.params, self.tasks, self.state, self.constants
        n, b, u = tasks.num_envs, p.num_bs, p.num_ue
        level = torch.as_tensor(level, dtype=torch.long, device=self.device).view(n, b, p.num_bands)

        safe = apply_safety_filter(level, s.map_w, self.level_power_w, p.i_max_w, p.safety_mode,
                                   bs_gain_lin=self._bs_gain_lin() if p.safety_mode == "lower" else None)
        served = channel.scheduled_ue(s.t, c.rr_table, c.rr_count, self.band_index)
        gain_db = tasks.gain_mean_db + s.fading_db
        sinr_lin, measured = self.link_sinr(safe, served, gain_db, s.external_w)
        radiated_w, _ = self.radiated_w(safe)

        on = safe.power_w > 0
        active = on & (served >= 0)
        link_rate = rw.link_rate_bps(sinr_lin, active, p.bandwidth_hz)
        rate = rw.ue_rate_bps(link_rate, served, u)
        queue = rw.update_queues(s.queue_bits, noise.arrivals_bits, rate, p.step_s)
        delay = queue / tasks.traffic_bps
        throughput = link_rate.sum((1, 2))
        fairness = rw.jain_index(link_rate, active) if p.fairness_over == "links" else rw.jain_index(rate)
        sinr_viol = (active & (sinr_lin < scalar_like(db_to_lin(p.min_sinr_db), sinr_lin))).sum((1, 2))
        latency_viol = (delay > scalar_like(p.max_delay_s, delay)).sum(-1)
        cost = rw.cost(safe.power_w, s.prev_power_w, p)
        penalty = rw.penalty(sinr_viol, latency_viol, p)
        result = StepResult(
            safe=safe, requested_level=level, map_w=s.map_w, gain_db=gain_db, served_ue=served,
            external_w=s.external_w,
            external_ue_w=s.external_w.gather(1, c.assoc_index),
            sinr_lin=torch.where(active, sinr_lin, scalar_like(0.0, sinr_lin)), active=active,
            measured=measured & active, rate_bps=rate, delay_s=delay, throughput_bps=throughput,
            fairness=fairness, cost=cost, penalty=penalty,
            reward=rw.reward(throughput, fairness, cost, penalty, p),
            sinr_violations=sinr_viol, latency_violations=latency_viol,
            blocked_unsafe=safe.blocked.sum((1, 2)),
            executed_violations=(on & ~safe.mask).sum((1, 2)),
            radiated_w=radiated_w,
        )
        self._advance(safe, radiated_w, queue, delay, rate, noise)
        return result

    def _bs_gain_lin(self) -> torch.Tensor:
        """h(b', b) linear with fading, 0 on the diagonal. [N, B, B]."""
        return db_to_lin(self.tasks.bs_gain_mean_db + self.state.bs_fading_db)

    def _advance(self, safe: SafePowers, radiated_w: torch.Tensor, queue, delay, rate, noise: StepNoise) -> None:
        p, s, c = self.params, self.state, self.constants
        n, b, u = self.tasks.num_envs, p.num_bs, p.num_ue
        eps_bs = noise.normal[:, b * u:].view(n, b, b)
        self.state = replace(
            s, t=s.t + 1,
            fading_db=channel.ar1_step(s.fading_db, c.coherence, c.innovation_db,
                                       noise.normal[:, : b * u].view(n, b, u)),
            bs_fading_db=channel.ar1_step(s.bs_fading_db, c.coherence, c.innovation_db,
                                          (eps_bs + eps_bs.transpose(1, 2)) / scalar_like(2**0.5, eps_bs)),
            incumbent_on=channel.incumbent_switch(s.incumbent_on, noise.uniform, c.p_on, c.p_off),
            queue_bits=queue, prev_power_w=safe.power_w, prev_level=safe.level, delay_s=delay, rate_bps=rate,
        )
        external = self.sense_external_w()
        self.state = replace(self.state, external_w=external, map_w=self.interference_map_w(safe, radiated_w, external))

    # --- observation -------------------------------------------------------------------
    def observation(self) -> torch.Tensor:
        """Flat normalised observation [N, obs_dim] float32 (layout: ``obs_layout``)."""
        p, s, n = self.params, self.state, self.num_envs
        c = lambda value: scalar_like(value, s.map_w)  # noqa: E731
        gain = (self.tasks.gain_mean_db + s.fading_db + c(100.0)) / c(20.0)
        interference = (lin_to_db(s.map_w * c(1e3) + c(1e-30)) - c(p.i_max_dbm)) / c(10.0)
        mask = self.mask().float()
        delay = s.delay_s / c(p.max_delay_s)
        rate = s.rate_bps / c(p.bandwidth_hz) / c(10.0)
        level = s.prev_level.float() / c(p.num_levels - 1)
        parts = [gain, interference.clamp(-5.0, 5.0), mask, delay.clamp(0.0, 10.0), rate.clamp(0.0, 10.0), level]
        if p.informed:
            t = self.tasks
            parts += [t.pa_gain_offset_db / c(10.0), (t.pa_compression_dbm - c(p.max_power_dbm)) / c(10.0),
                      t.access_gain_offset_db / c(10.0)]
        return torch.cat([x.reshape(n, -1) for x in parts], dim=1).clamp(-10.0, 10.0)

    def obs_layout(self) -> dict[str, slice]:
        """Slices of the observation vector by name."""
        return observation_layout(self.params)

    def close(self) -> None:
        """Nothing to release in the simulator."""


def observation_layout(p: NetworkParams) -> dict[str, slice]:
    """Slices of one env's flat observation by name (its size: the last slice's stop)."""
    sizes = [("gain", p.num_bs * p.num_ue), ("interference", p.num_bs * p.num_bands),
             ("mask", p.num_bs * p.num_bands), ("delay", p.num_ue), ("rate", p.num_ue),
             ("prev_level", p.num_bs * p.num_bands)]
    if p.informed:
        sizes += [("pa_gain_offset", p.num_bs * p.num_bands), ("pa_compression", p.num_bs),
                  ("access_gain_offset", p.num_bs * p.num_bands)]
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out
