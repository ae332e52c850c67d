"""Build a network backend from a testbed Config: the composition root of the radio side.

``make_backend(config, num_envs)`` turns the config's ``backend`` and ``hardware`` sections
into a ``hardware.measured.MeasuredNetwork``: it checks the radio map, starts the GNU Radio
flowgraphs the config asks for (``hardware.start_bridge``, see ``testbed.bridge``), opens every
radio with its driver (mock radios on one emulated RF medium with the network's scene), and
builds the pilot plan once; mock radios get the bench's impairments (``hardware.impairments``). With ``hardware.record.dir`` set it records the run there
(``hardware.recording``, the config written beside it); ``backend: replay`` runs the same
backend on a recording's captures (``hardware.replay``), refusing a config whose network, env,
task or hardware sections differ from the recorded ones. Nothing here is imported by ``hardware``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hardware.config import HardwareConfig
from hardware.dsp import PilotPlan
from hardware.measured import BackendError, MeasuredNetwork, check_radio_map, close_all
from hardware.radio import Radio
from hardware.recording import open_recorder
from sim.params import NetworkParams
from testbed.config import Config, load_config, to_dict

if TYPE_CHECKING:
    from hardware.emulated.scene import TaskScene

__all__ = ["make_backend", "open_radios", "driver_class", "replay_config", "MEASURED_BACKENDS"]

MEASURED_BACKENDS = ("mock", "pluto", "gnuradio", "replay")
REPLAYED_SECTIONS = ("network", "env", "tasks", "test_tasks", "hardware")   # must match the recording's
UNREPLAYED = ("env.device", "hardware.record", "hardware.replay")            # may differ


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

            from hardware.emulated.impairments import Impairments

            medium = RfMedium(hw.sample_rate_hz, seed=seed)
            imp = hw.impairments
            for e in hw.radios:
                radios[e.name] = MockRadio(e.name, limits, e, hw.dry_run, medium=medium,
                                           impairments=Impairments(**imp.for_radio(e, hw.center_hz)),
                                           seed=imp.radio_seed(e))
            return radios, TaskScene(medium, hw, plan, params)
        for e in hw.radios:
            radios[e.name] = driver_class(e.driver)(e.name, limits, e, hw.dry_run, timeout_s=hw.timeout_s)
    except BaseException:
        close_all(radios)
        raise
    return radios, None


def _flat(data, prefix: str = "") -> dict:
    """A nested config dict as {dotted.key: value}."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def _check_replayable(config: Config, recorded: dict, directory: str) -> None:
    """Raise BackendError naming the first field where ``config`` leaves the recorded run."""
    mine, theirs = _flat(to_dict(config)), _flat(to_dict(load_config(recorded)))
    for key in sorted(set(mine) | set(theirs)):
        if key.split(".")[0] in REPLAYED_SECTIONS and not key.startswith(UNREPLAYED) \
                and mine.get(key) != theirs.get(key):
            raise BackendError(f"backend replay: {key}={mine.get(key)!r}, the recording {directory} was made with "
                               f"{theirs.get(key)!r}; replay the recorded config (testbed replay {directory})")


def replay_config(directory: str) -> Config:
    """The config a recording was made with, set to replay it (backend replay, no recording)."""
    from hardware.replay import Recording

    recorded = Recording(directory).config
    if recorded is None:
        raise BackendError(f"hardware.replay: {directory} holds no config (recorded outside the testbed)")
    return load_config(recorded, {"backend": "replay", "hardware": {"replay": str(directory), "record": {"dir": ""}}})


def _replay_backend(config: Config, num_envs: int, device, seed: int) -> MeasuredNetwork:
    """The measured backend on the captures of the recording ``hardware.replay``."""
    from hardware.replay import Recording, open_replay

    hw, params = config.hardware, config.network
    if not hw.replay:
        raise BackendError("backend replay needs hardware.replay: the directory of a recording")
    recording = Recording(hw.replay)
    if recording.config is not None:
        _check_replayable(config, recording.config, hw.replay)
    recorded = recording.run["context"]
    if recorded.get("num_envs", num_envs) != num_envs:
        raise BackendError(f"backend replay: {num_envs} envs asked for, {hw.replay} was recorded with "
                           f"{recorded['num_envs']}")
    radios, check = open_replay(recording, hw)
    return MeasuredNetwork(params, config.task_ranges, num_envs, hw, radios, device=device,
                           seed=recorded.get("seed", seed), task_seed=config.env.task_seed, recorder=check)


def make_backend(config: Config, num_envs: int, device=None, seed: int | None = None) -> MeasuredNetwork:
    """The measured backend of a testbed Config (backend mock | pluto | gnuradio | replay). With
    ``hardware.start_bridge`` (gnuradio) it starts the radios' flowgraphs first; ``close()``
    stops them, and so does a failure here."""
    if config.backend not in MEASURED_BACKENDS:
        raise BackendError(f"make_backend serves the measured backends, got backend {config.backend!r}")
    from testbed import bridge

    params = config.network
    seed = config.env.seed if seed is None else seed
    device = device or config.env.device
    check_radio_map(config.hardware, params)
    if config.backend == "replay":
        return _replay_backend(config, num_envs, device, seed)
    plan = config.hardware.pilot_plan(params.num_bs, params.num_bands)
    context = {"config": to_dict(config), "num_envs": num_envs, "seed": seed}   # as given, before any bridge ports
    flowgraphs, radios = [], {}
    try:
        if config.backend == "gnuradio" and config.hardware.start_bridge:
            flowgraphs, config = bridge.start_flowgraphs(config, plan)
        hw = config.hardware
        radios, scene = open_radios(hw, config.backend, params, plan, seed)
        return MeasuredNetwork(params, config.task_ranges, num_envs, hw, radios, device=device,
                               seed=seed, task_seed=config.env.task_seed, scene=scene, flowgraphs=flowgraphs,
                               plan=plan, recorder=open_recorder(hw, context))
    except BaseException:
        close_all(radios)
        for fg in flowgraphs:
            fg.stop()
        raise
