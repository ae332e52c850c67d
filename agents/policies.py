"""Policy networks with factorised categorical heads, one per (base station, band).

An action is ``H = B*K`` power levels in ``{0..L-1}``; the heads are independent given the
network's features, so a log-probability is the sum over heads. With ``mask_mode='logits'``
the policy reads the safety mask from the observation (``obs_layout['mask']``, 1.0 = usable)
and gives the levels above 0 of masked bands zero probability: it never requests what the
filter would block. Log-probabilities, entropies and sampling are written out on logits so
they work under ``torch.func.vmap``.
"""
from __future__ import annotations

import torch
from torch import nn

_MASKED_LOGIT = -1e9


def mask_logits(logits: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """Forbid levels > 0 where ``usable`` is 0. logits [..., H, L], usable [..., H] (1.0 = usable)."""
    open_ = (usable > 0.5).unsqueeze(-1)                                  # [..., H, 1]
    allowed = torch.cat([torch.ones_like(open_), open_.expand(*open_.shape[:-1], logits.shape[-1] - 1)], -1)
    return torch.where(allowed, logits, torch.full_like(logits, _MASKED_LOGIT))


def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Joint log-probability of ``actions`` [..., H] under factorised heads logits [..., H, L] -> [...]."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Joint entropy (sum over heads) of logits [..., H, L] -> [...]."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).sum(-1)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of factorised heads (sum over heads), logits [..., H, L] -> [...] in nats."""
    logp, logq = torch.log_softmax(logits_p, dim=-1), torch.log_softmax(logits_q, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).sum(-1)


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one level per head by the Gumbel-max trick (one uniform draw for the batch). -> [..., H] long."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (logits + gumbel).argmax(-1)


def act(logits: torch.Tensor, generator: torch.Generator | None, greedy: bool) -> torch.Tensor:
    """The most likely level per head if ``greedy`` (deterministic), else a sample. -> [..., H] long."""
    return logits.argmax(-1) if greedy else sample(logits, generator)


def _mlp(in_dim: int, hidden: int, num_layers: int, out_dim: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers):
        layers += [_orthogonal(nn.Linear(dim, hidden), 2 ** 0.5), nn.Tanh()]
        dim = hidden
    layers.append(_orthogonal(nn.Linear(dim, out_dim), out_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class SharedLinkActor(nn.Module):
    """One actor head shared by every link (b,k): a context of the whole observation, the link's
    own observation entries (``link_index`` [H, F], e.g. its interference, mask, last level and,
    informed, its hidden parameters) and a one-hot of its BS and band go through one MLP that
    gives the link's L logits. A rule about a link's entries is learnt once for all H links."""

    def __init__(self, obs_dim: int, link_index: torch.Tensor, link_id: torch.Tensor, hidden_size: int,
                 num_layers: int, num_levels: int):
        super().__init__()
        self.context = nn.Sequential(_orthogonal(nn.Linear(obs_dim, hidden_size), 2 ** 0.5), nn.Tanh())
        self.register_buffer("link_index", link_index)      # [H, F] long
        self.register_buffer("link_id", link_id)            # [H, B + K] one-hot BS and band
        self.head = _mlp(hidden_size + link_index.shape[1] + link_id.shape[1], hidden_size, num_layers,
                         num_levels, 0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> logits [..., H·L]."""
        num_links = self.link_index.shape[0]
        context = self.context(obs).unsqueeze(-2).expand(*obs.shape[:-1], num_links, -1)
        ids = self.link_id.expand(*obs.shape[:-1], -1, -1)
        return self.head(torch.cat([context, obs[..., self.link_index], ids], -1)).flatten(-2)


def link_features(layout: dict[str, slice], num_bs: int, num_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``SharedLinkActor``: per link (b,k), row-major, the observation indices of its own entries
    (the per-link slices of ``layout``, the per-BS ``pa_compression`` where present) [H, F], and the
    one-hot of its BS and band [H, B + K]."""
    per_link = [name for name in ("interference", "mask", "prev_level", "pa_gain_offset", "access_gain_offset")
                if name in layout]
    rows, ids = [], []
    for b in range(num_bs):
        for k in range(num_bands):
            row = [layout[name].start + b * num_bands + k for name in per_link]
            if "pa_compression" in layout:
                row.append(layout["pa_compression"].start + b)
            rows.append(row)
            ids.append([float(i == b) for i in range(num_bs)] + [float(i == k) for i in range(num_bands)])
    return torch.tensor(rows), torch.tensor(ids)


class MLPPolicy(nn.Module):
    """Feed-forward actor and critic with separate torsos; the actor is one MLP with H·L outputs, or,
    given ``shared_links`` (``link_features``' two tensors), a ``SharedLinkActor``."""

    def __init__(self, obs_dim: int, num_heads: int, num_levels: int, hidden_size: int = 64,
                 num_layers: int = 2, mask_slice: slice | None = None,
                 shared_links: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.num_heads, self.num_levels, self.obs_dim = num_heads, num_levels, obs_dim
        self.mask_slice = mask_slice
        if shared_links is None:
            self.actor = _mlp(obs_dim, hidden_size, num_layers, num_heads * num_levels, 0.01)
        else:
            self.actor = SharedLinkActor(obs_dim, *shared_links, hidden_size, num_layers, num_levels)
        self.critic = _mlp(obs_dim, hidden_size, num_layers, 1, 1.0)

    def forward(self, obs: torch.Tensor, with_value: bool = True):
        """obs [..., D] -> (logits [..., H, L], value [...]), or logits alone if not ``with_value``."""
        logits = self.logits(obs)
        return (logits, self.critic(obs).squeeze(-1)) if with_value else logits

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        logits = self.actor(obs).unflatten(-1, (self.num_heads, self.num_levels))
        if self.mask_slice is not None:
            logits = mask_logits(logits, obs[..., self.mask_slice])
        return logits


class RecurrentPolicy(nn.Module):
    """RL² policy: encoder, GRU, optional causal multi-head self-attention over the last
    ``window`` GRU outputs (with a residual and layer norm), then actor and critic heads.

    The input of a step is (observation, one-hot previous action, previous reward, done, the
    step's index within the trial as a fraction of the trial length) made by :meth:`make_input`. The recurrent state is ``(h [N, Hd], memory [N, W-1, Hd],
    valid [N, W-1])``: the hidden state and the previous W-1 outputs the attention reads.
    :meth:`step` (acting) and :meth:`sequence` (training) compute the same function.
    """

    def __init__(self, obs_dim: int, num_heads: int, num_levels: int, hidden_size: int = 128,
                 attention: bool = False, num_attention_heads: int = 4, window: int = 16,
                 mask_slice: slice | None = None):
        super().__init__()
        if attention and hidden_size % num_attention_heads:
            raise ValueError(f"recurrent.hidden_size={hidden_size} must be a multiple of "
                             f"recurrent.num_heads={num_attention_heads}")
        self.num_heads, self.num_levels = num_heads, num_levels
        self.hidden_size, self.mask_slice = hidden_size, mask_slice
        self.memory_len = window - 1 if attention else 0
        self.input_dim = obs_dim + num_heads * num_levels + 3
        self.encoder = nn.Sequential(_orthogonal(nn.Linear(self.input_dim, hidden_size), 2 ** 0.5), nn.Tanh())
        self.gru = nn.GRU(hidden_size, hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, num_attention_heads, batch_first=True) if attention else None
        self.norm = nn.LayerNorm(hidden_size) if attention else None
        self.actor = _orthogonal(nn.Linear(hidden_size, num_heads * num_levels), 0.01)
        self.critic = _orthogonal(nn.Linear(hidden_size, 1), 1.0)

    def make_input(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
                   done: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        """obs [..., D], prev_action [..., H] long, prev_reward, done and progress (step in trial / trial
        length) [...] -> [..., input_dim]."""
        onehot = nn.functional.one_hot(prev_action, self.num_levels).flatten(-2).to(obs.dtype)
        scalars = [x.unsqueeze(-1).to(obs.dtype) for x in (prev_reward, done, progress)]
        return torch.cat([obs, onehot, *scalars], dim=-1)

    def initial_state(self, num_envs: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.zeros(num_envs, self.hidden_size, device=device)
        memory = torch.zeros(num_envs, self.memory_len, self.hidden_size, device=device)
        valid = torch.zeros(num_envs, self.memory_len, dtype=torch.bool, device=device)
        return h, memory, valid

    @staticmethod
    def reset_state(state, reset: torch.Tensor):
        """Zero the state of lanes where ``reset`` [N] is True (a new task begins)."""
        h, memory, valid = state
        keep = ~reset
        return (h * keep.unsqueeze(-1), memory * keep.view(-1, 1, 1), valid & keep.unsqueeze(-1))

    def step(self, inp: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """One step for N lanes: inp [N, input_dim] -> logits [N, H, L], value [N], next state."""
        logits, values, state = self.sequence(inp.unsqueeze(0), state)
        return logits[0], values[0], state

    def sequence(self, inp: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """T steps from ``state`` with no reset inside: inp [T, N, input_dim] -> logits [T, N, H, L], values [T, N], state."""
        h, memory, valid = state
        out, h_next = self.gru(self.encoder(inp), h.unsqueeze(0))     # out [T, N, Hd]
        feats = out
        if self.attention is not None:
            feats, memory, valid = self._attend(out, memory, valid)
        logits = self.actor(feats).unflatten(-1, (self.num_heads, self.num_levels))
        if self.mask_slice is not None:
            logits = mask_logits(logits, inp[..., self.mask_slice])
        return logits, self.critic(feats).squeeze(-1), (h_next[0], memory, valid)

    def _attend(self, out: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor):
        """Causal attention of each output over itself and the previous W-1 outputs."""
        num_steps, num_envs, _ = out.shape
        w1 = self.memory_len
        queries = out.transpose(0, 1)                                  # [N, T, Hd]
        keys = torch.cat([memory, queries], dim=1)                     # [N, W-1+T, Hd]
        key_valid = torch.cat([valid, torch.ones(num_envs, num_steps, dtype=torch.bool, device=out.device)], 1)
        t = torch.arange(num_steps, device=out.device).unsqueeze(1)    # query t sits at key index t+W-1
        j = torch.arange(w1 + num_steps, device=out.device).unsqueeze(0)
        in_window = (j >= t) & (j <= t + w1)                          # [T, W-1+T]
        blocked = ~(in_window.unsqueeze(0) & key_valid.unsqueeze(1))  # [N, T, W-1+T]
        blocked = blocked.repeat_interleave(self.attention.num_heads, dim=0)
        attended, _ = self.attention(queries, keys, keys, attn_mask=blocked, need_weights=False)
        feats = self.norm(queries + attended).transpose(0, 1)          # [T, N, Hd]
        return feats, keys[:, -w1:] if w1 else memory, key_valid[:, -w1:] if w1 else valid
