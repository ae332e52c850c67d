"""The safety invariant from what the emulators record on air, with timestamps: on every backend
(mock, emulated Plutos, the GNU Radio bridge with the device's clock), nothing radiates, after the
driver's TX switch latency, that the current step's safety filter did not approve. The mock and
the emulated Pluto put a burst on the medium the instant it is sent (latency 0 samples); the GNU
Radio stand-in swaps it in within its buffers (``test_gnuradio_standin``), checked here against
its own on-air log."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.drivers.pluto import TX_FULL_SCALE
from sim.units import db_to_amplitude
from testbed.backends import make_backend
from testbed.config import load_config


class Watched:
    """A measured backend on an RF medium; every burst the Transmitter builds is kept with the
    step it was approved in, and the step's span on the medium's clock."""

    def __init__(self, net, medium, atol: float):
        self.net, self.medium, self.atol = net, medium, atol
        self.approved: dict[int, list[tuple[str, np.ndarray]]] = {}
        self.spans: dict[int, tuple[int, int]] = {}
        self.step_id = -1
        transmit, calibration = net.transmitter.transmit, net.transmitter.transmit_calibration

        def watched(*args, **kwargs):
            bursts = transmit(*args, **kwargs)
            self.approved.setdefault(self.step_id, []).extend((r, b.iq) for r, b in bursts.items())
            return bursts
        net.transmitter.transmit = watched
        net.transmitter.transmit_calibration = calibration

    def step(self, level: torch.Tensor) -> None:
        self.step_id += 1
        start = self.medium.clock
        assert not any(p.transmitting for p in self.medium.ports.values())   # every step starts silent
        self.net.step(level)
        self.spans[self.step_id] = (start, self.medium.clock)

    def check(self) -> int:
        """Every change on air inside a step is a mute or a burst of that step's filter; returns
        how many bursts went on air."""
        gain = db_to_amplitude(self.net.hw.tx_gain_db)
        checked = 0
        for clock, port, iq in self.medium.on_air:
            step = next((s for s, (a, b) in self.spans.items() if a <= clock < b), None)
            if step is None or iq is None:
                continue
            ok = [b for r, b in self.approved.get(step, []) if r == port and b.size == iq.size]
            assert any(np.allclose(iq, b * gain, rtol=0, atol=self.atol * gain) for b in ok), \
                f"{port} radiated at sample {clock} a burst step {step}'s filter did not approve"
            checked += 1
        return checked


@pytest.fixture(scope="module", params=["mock", "pluto"])
def watched(request):
    if request.param == "mock":
        net = make_backend(load_config("bench_mock", {"network": {"episode_steps": 1000}}), num_envs=1)
        medium = next(iter(net.radios.values())).medium
        yield Watched(net, medium, atol=1e-6)
        net.close()
        return
    from hardware.emulated.iiod import serve_bench

    config = load_config("bench_pluto", {"hardware": {"settle_s": 0.0}, "network": {"episode_steps": 1000}})
    emulators, hw = serve_bench(config.hardware, config.network)
    net = make_backend(dataclasses.replace(config, hardware=hw), num_envs=1)
    try:
        yield Watched(net, emulators[0].medium, atol=1.0 / TX_FULL_SCALE)   # the DAC's int16 rounding
    finally:
        net.close()
        for emu in emulators:
            emu.stop()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels=st.lists(st.lists(st.integers(0, 3), min_size=15, max_size=15), min_size=1, max_size=3),
       incumbents=st.lists(st.booleans(), min_size=15, max_size=15))
def test_nothing_radiates_that_the_current_step_did_not_approve(watched, levels, incumbents):
    net = watched.net
    if watched.step_id < 0:
        net.reset(seed=0)
    on = torch.tensor(incumbents).reshape(1, 3, 5)
    net.state = dataclasses.replace(net.state, incumbent_on=on)
    for row in levels:
        watched.step(torch.tensor(row).reshape(1, 3, 5))
    approved = sum(len(v) for v in watched.approved.values())
    assert watched.check() == approved        # every approved burst went on air once, and nothing else
