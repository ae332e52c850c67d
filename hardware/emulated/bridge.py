"""The GNU Radio bridge in ``emulate`` mode standing in for a bench: GNU Radio's own channel
blocks in place of radios, set like the mock bench's medium (``hardware.emulated.scene``)."""
from __future__ import annotations

from hardware.config import HardwareConfig
from hardware.dsp import PilotPlan
from hardware.emulated.scene import antenna_link_gain_db, antenna_noise_fs
from hardware.gnuradio_bridge.process import FlowgraphProcess, entry_ports, host_of
from sim.params import NetworkParams

__all__ = ["emulator_flowgraph"]


def emulator_flowgraph(hw: HardwareConfig, params: NetworkParams, plan: PilotPlan, seed: int = 0,
                       **overrides) -> FlowgraphProcess:
    """An emulate-mode flowgraph (not started) standing in for the radios of ``hw``.

    Every radio is a TX+RX node (as a USRP would be); links go from every BS radio to every UE
    radio, and with ``hardware.measure_map`` from every BS radio to every other BS radio (its map
    turns); without it BS radios hear only noise and interferers (the loop senses with TX off),
    and the medium stays small. Receiver noise is the network's N0 per band, and every link into a
    radio has the gain ``antenna_link_gain_db`` of the receiving radio's entry and its delay
    ``delay_samples`` (FIR taps just long enough). Every node has the bench's impairments
    (``hardware.impairments``: its crystal drawn or overridden by the entry's ``cfo_hz``, and the
    receive chain's figures; ``usrp_standin``: the device's clock, with injected overflows and
    underflows). ``seed`` seeds the flowgraph's noise; ``overrides`` replace
    flowgraph options.
    """
    bs, ue = hw.radios_with_role("bs"), hw.radios_with_role("ue")
    figures = {e.name: hw.impairments.for_radio(e, hw.center_hz) for e in hw.radios}
    chain = next(iter(figures.values()))
    options = dict(sample_rate_hz=hw.sample_rate_hz, center_hz=hw.center_hz, tx_gain_db=hw.tx_gain_db,
                   rx_gain_db=hw.rx_gain_db, max_tx_gain_db=hw.max_tx_gain_db,
                   noise_voltage=antenna_noise_fs(hw, params, plan) ** 0.5,
                   rx_link_gain_db={e.name: antenna_link_gain_db(hw, e) for e in hw.radios},
                   crystal_ppm={n: f["crystal_ppm"] for n, f in figures.items() if f},
                   ideal=hw.impairments.ideal, realtime=hw.impairments.usrp_standin,
                   overflow_every=hw.impairments.overflow_every_samples,
                   underflow_every=hw.impairments.underflow_every_samples, fault_samples=hw.impairments.fault_samples,
                   **{k: v for k, v in chain.items() if k != "crystal_ppm"},
                   rx_link_delay={e.name: e.delay_samples for e in hw.radios if e.delay_samples},
                   num_taps=1 + max(e.delay_samples for e in hw.radios),
                   link=[f"{b.name}={r.name}" for b in bs for r in (*ue, *(bs if hw.measure_map else ()))
                         if r.name != b.name],
                   heartbeat_timeout_s=max(2.0, 2 * hw.timeout_s), seed=seed)
    options.update(overrides)
    address, ports = entry_ports(hw.radios)
    client = {host_of(e.tx_address) for e in hw.radios}
    names = [e.name for e in hw.radios]
    return FlowgraphProcess("emulate", tx=names, rx=names, address=address,
                            client_address=client.pop() if len(client) == 1 else "127.0.0.1", ports=ports, **options)
