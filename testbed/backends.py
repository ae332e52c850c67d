"""Build a network backend from a testbed Config: the composition root of the radio side.

``make_backend(config, num_envs)`` turns the config's ``backend`` and ``hardware`` sections
into a ``hardware.measured.MeasuredNetwork``: it checks the radio map, starts the GNU Radio
flowgraphs the config asks for (``hardware.start_bridge``, see ``testbed.bridge``), opens every
radio with its driver (mock radios on one emulated RF medium with the network's scene), and
builds the pilot plan once. Nothing here is imported by ``hardware``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hardware.config import HardwareConfig
from hardware.dsp import PilotPlan
from hardware.measured import BackendError, MeasuredNetwork, check_radio_map, close_all
from hardware.radio import Radio
from sim.params import NetworkParams
from testbed.config import Config

if TYPE_CHECKING:
    from hardware.emulated.scene import TaskScene

__all__ = ["make_backend", "open_radios", "driver_class", "MEASURED_BACKENDS"]

MEASURED_BACKENDS = ("mock", "pluto", "gnuradio")


def driver_class(driver: str) -> type[Radio]:
    """The Radio subclass of a real driver, imported only when used."""
    if driver == "pluto":
        from hardware.drivers.pluto import PlutoRadio
        return PlutoRadio
    if driver == "gnuradio":
        from hardware.drivers.gnuradio import ZmqRadio
        return ZmqRadio
    raise BackendError(f"unknown driver {driver!r}")


def open_radios(hw: HardwareConfig, backend: str, params: NetworkParams, plan: PilotPlan,
                seed: int = 0) -> tuple[dict[str, Radio], TaskScene | None]:
    """Open every radio of the map (closing those already open if one fails). The mock backend
    puts its radios on one emulated medium and returns the ``TaskScene`` that sets it; the
    other backends return no scene."""
    drivers = {e.driver for e in hw.radios}
    if backend == "mock" and drivers != {"mock"}:
        raise BackendError(f"backend mock needs every radio's driver to be mock, got {sorted(drivers)}")
    if backend != "mock" and "mock" in drivers:
        raise BackendError(f"backend {backend} drives real radios; hardware.radios lists mock ones")
    limits = hw.limits()
    radios: dict[str, Radio] = {}
    try:
        if backend == "mock":
            from hardware.emulated.medium import RfMedium
            from hardware.emulated.mock import MockRadio
            from hardware.emulated.scene import TaskScene

            medium = RfMedium(hw.sample_rate_hz, seed=seed)
            for e in hw.radios:
                radios[e.name] = MockRadio(e.name, limits, e, hw.dry_run, medium=medium)
            return radios, TaskScene(medium, hw, plan, params)
        for e in hw.radios:
            radios[e.name] = driver_class(e.driver)(e.name, limits, e, hw.dry_run, timeout_s=hw.timeout_s)
    except BaseException:
        close_all(radios)
        raise
    return radios, None


def make_backend(config: Config, num_envs: int, device=None, seed: int | None = None) -> MeasuredNetwork:
    """The measured backend of a testbed Config (backend mock | pluto | gnuradio). With
    ``hardware.start_bridge`` (gnuradio) it starts the radios' flowgraphs first; ``close()``
    stops them, and so does a failure here."""
    if config.backend not in MEASURED_BACKENDS:
        raise BackendError(f"make_backend serves the measured backends, got backend {config.backend!r}")
    from testbed import bridge

    params = config.network
    seed = config.env.seed if seed is None else seed
    check_radio_map(config.hardware, params)
    plan = config.hardware.pilot_plan(params.num_bs, params.num_bands)
    flowgraphs, radios = [], {}
    try:
        if config.backend == "gnuradio" and config.hardware.start_bridge:
            flowgraphs, config = bridge.start_flowgraphs(config, plan)
        hw = config.hardware
        radios, scene = open_radios(hw, config.backend, params, plan, seed)
        return MeasuredNetwork(params, config.task_ranges, num_envs, hw, radios, device=device or config.env.device,
                               seed=seed, task_seed=config.env.task_seed, scene=scene, flowgraphs=flowgraphs,
                               plan=plan)
    except BaseException:
        close_all(radios)
        for fg in flowgraphs:
            fg.stop()
        raise
