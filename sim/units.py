"""Unit conversions. Every dB/dBm/W conversion in the project goes through these; each works
on Python floats, numpy arrays and torch tensors alike (and returns the same kind)."""
from __future__ import annotations

import math

import numpy as np
import torch

THERMAL_NOISE_DBM_PER_HZ = -174.0


def _log10(x):
    if isinstance(x, torch.Tensor):
        return torch.log10(x)
    if isinstance(x, np.ndarray):
        return np.log10(x)
    return math.log10(x)


def db_to_lin(x_db):
    """Power ratio in dB to linear."""
    if isinstance(x_db, torch.Tensor):
        return torch.pow(10.0, x_db / 10.0)
    return 10.0 ** (x_db / 10.0)


def lin_to_db(x):
    """Linear power ratio to dB."""
    return 10.0 * _log10(x)


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
    return db_to_lin(p_dbm) * 1e-3


def w_to_dbm(p_w):
    """Power in W to dBm."""
    return lin_to_db(p_w * 1e3)


def noise_power_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Thermal noise per band: -174 dBm/Hz + 10 log10(W) + NF, in dBm."""
    return THERMAL_NOISE_DBM_PER_HZ + lin_to_db(bandwidth_hz) + noise_figure_db
