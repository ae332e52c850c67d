"""Unit conversions. Every dB/dBm/W conversion in the project goes through these; each works
on Python floats, numpy arrays and torch tensors alike (and returns the same kind)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

THERMAL_NOISE_DBM_PER_HZ = -174.0


def scalar_like(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """A Python float ``value`` as a cached 0-d CPU tensor of ``like``'s dtype (float32 or float64;
    the default dtype for integer or bool ``like``), to combine with ``like`` in element-wise ops:
    the result is bit for bit what the float gives (torch rounds it to that dtype once here, not on
    every call). Not for the numerator of a division: ``float / tensor`` runs as the reciprocal of the
    tensor times the float, which rounds differently. Other dtypes (half precision) get ``value``
    back, and so does a tensor ``value``."""
    if isinstance(value, torch.Tensor):
        return value
    dtype = like.dtype
    return _scalar(float(value), dtype if dtype.is_floating_point else torch.get_default_dtype())


@functools.lru_cache(maxsize=256)
def _scalar(value: float, dtype: torch.dtype) -> torch.Tensor | float:
    if dtype not in (torch.float32, torch.float64):
        return value
    with torch.inference_mode(False):   # an ordinary tensor whatever mode the first call runs in
        return torch.tensor(value, dtype=dtype, device="cpu")


def _const(value: float, x):
    """``value`` to combine with ``x``: ``scalar_like`` for a tensor, the float itself otherwise."""
    return scalar_like(value, x) if isinstance(x, torch.Tensor) else value


def _log10(x):
    if isinstance(x, torch.Tensor):
        return torch.log10(x)
    if isinstance(x, np.ndarray):
        return np.log10(x)
    return math.log10(x)


def db_to_lin(x_db):
    """Power ratio in dB to linear."""
    if isinstance(x_db, torch.Tensor):
        ten = scalar_like(10.0, x_db)
        return torch.pow(ten, x_db / ten)
    return 10.0 ** (x_db / 10.0)


def lin_to_db(x):
    """Linear power ratio to dB."""
    log = _log10(x)
    return _const(10.0, log) * log


def db_to_amplitude(x_db):
    """Power ratio in dB to the amplitude (voltage) ratio, 10^(x/20)."""
    if isinstance(x_db, torch.Tensor):
        return torch.pow(10.0, x_db / 20.0)
    return 10.0 ** (x_db / 20.0)


def amplitude_to_db(x):
    """Amplitude (voltage) ratio to the power ratio in dB, 20 log10(x)."""
    return 20.0 * _log10(x)


def dbm_to_w(p_dbm):
    """Power in dBm to W."""
    lin = db_to_lin(p_dbm)
    return lin * _const(1e-3, lin)


def w_to_dbm(p_w):
    """Power in W to dBm."""
    return lin_to_db(p_w * _const(1e3, p_w))


def noise_power_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Thermal noise per band: -174 dBm/Hz + 10 log10(W) + NF, in dBm."""
    return THERMAL_NOISE_DBM_PER_HZ + lin_to_db(bandwidth_hz) + noise_figure_db
