"""The ``hardware:`` section of the config: radios, the radio map, RF settings and hard limits.

Validated by ``testbed.config.build`` from the field metadata (``range`` inclusive, ``choices``);
``__post_init__`` adds the cross-field checks, so a config that breaks a hard limit fails while
loading, before anything transmits.
"""
from __future__ import annotations

import typing
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from hardware.addresses import is_loopback
from hardware.drivers.pluto import check_pluto_settings
from hardware.dsp import PilotPlan
from hardware.radio import RadioSettings, TxLimits
from sim.params import param
from sim.safety import SafetyViolation

DRIVERS = ("mock", "pluto", "gnuradio")
REFERENCES = ("internal", "external", "gpsdo", "mimo")   # UHD's names of a USRP's 10 MHz / PPS sources


@dataclass(frozen=True)
class RadioEntry:
    """One radio of the bench and the nodes of the network it stands for."""

    name: str = param("radio", "unique radio name, used in messages and logs")
    driver: str = param("mock", "driver: mock (pure Python), pluto (pyadi-iio), gnuradio (ZMQ bridge)", choices=DRIVERS)
    role: str = param("bs", "bs: transmits the pilots of its base stations and senses; ue: captures for UEs",
                      choices=("bs", "ue"))
    nodes: list = param([], "BS indices (role bs) or UE indices (role ue) this radio stands for; "
                            "empty on a ue radio = every UE not listed elsewhere")
    uri: str = param("", "pluto: libiio context URI, e.g. ip:192.168.2.1 or usb:1.2.5")
    control_address: str = param("", "gnuradio: ZMQ endpoint of the bridge's control channel, "
                                     "e.g. tcp://127.0.0.1:5600")
    tx_address: str = param("", "gnuradio: ZMQ endpoint the bridge reads TX IQ from, e.g. tcp://127.0.0.1:5555")
    rx_address: str = param("", "gnuradio: ZMQ endpoint the bridge publishes RX IQ on, e.g. tcp://127.0.0.1:5556")
    device_args: str = param("", "gnuradio: UHD device arguments; empty = GNU Radio channel-model emulator")
    clock_source: str = param("internal", "gnuradio with device_args (a USRP): its 10 MHz reference, as UHD names "
                                          "it; external = the REF input (a shared 10 MHz: the radios' offsets "
                                          "vanish), checked locked (sensor ref_locked) at start", choices=REFERENCES)
    time_source: str = param("internal", "gnuradio with device_args (a USRP): its PPS, as UHD names it; external = "
                                         "the PPS input (device times aligned at its next edge)", choices=REFERENCES)
    server_key: str = param("", "gnuradio: path of the bridge's CURVE public key (server.key of `testbed keys "
                                "generate`); with client_key it authenticates and encrypts the bridge's traffic, "
                                "required when an address is beyond loopback")
    client_key: str = param("", "gnuradio: path of this side's CURVE secret key (client.key_secret of `testbed "
                                "keys generate`), with server_key")
    link_gain_db: float = param(0.0, "ue radios: physical path gain from the BS radios to this radio "
                                     "(cables, attenuators, radio gains) in dB, e.g. -30 through a 30 dB attenuator",
                                (-200.0, 60.0))
    cfo_hz: typing.Optional[float] = param(None, "emulated radios (mock, GNU Radio emulate): override of this radio's "
                                                 "crystal error (hardware.impairments), given as the offset in Hz of what "
                                                 "it hears from an exact radio at center_hz (crystal_ppm = -cfo_hz / "
                                                 "center_hz · 1e6); empty = drawn from impairments.crystal_ppm",
                                           (-1e6, 1e6))
    delay_samples: int = param(0, "mock only: delay of the links into this radio in samples", (0, 100_000))

    def __post_init__(self):
        for i, node in enumerate(self.nodes):
            if isinstance(node, bool) or not isinstance(node, int) or node < 0:
                raise ValueError(f"radio {self.name!r}: nodes[{i}]={node!r} must be a node index >= 0")
        if self.role == "bs" and not self.nodes:
            raise ValueError(f"radio {self.name!r}: a bs radio needs the BS indices it carries in nodes")
        if self.driver == "pluto" and not self.uri:
            raise ValueError(f"radio {self.name!r}: the pluto driver needs uri (e.g. ip:192.168.2.1)")
        references = {k: getattr(self, k) for k in ("clock_source", "time_source") if getattr(self, k) != "internal"}
        if references and not (self.driver == "gnuradio" and self.device_args):
            raise ValueError(f"radio {self.name!r}: {', '.join(f'{k}={v}' for k, v in references.items())} applies "
                             "to a USRP (driver gnuradio with device_args); allowed here: internal")
        if bool(self.server_key) != bool(self.client_key):
            raise ValueError(f"radio {self.name!r}: server_key and client_key go together (CURVE key files)")
        for key in ("control_address", "tx_address", "rx_address"):
            host = urlsplit(getattr(self, key)).hostname
            if self.driver == "gnuradio" and host and not self.server_key and not is_loopback(host):
                raise ValueError(f"radio {self.name!r}: {key} {getattr(self, key)} is beyond loopback: set "
                                 "server_key and client_key (testbed keys generate DIR)")


@dataclass(frozen=True)
class RecordConfig:
    """``hardware.record``: what a run writes about its captures (``hardware.recording``)."""

    dir: str = param("", "write a recording of the run into this directory (SigMF IQ per radio and a step "
                         "table); empty = no recording")
    iq: bool = param(True, "record the captured IQ as SigMF; false = the step table (estimates) only, "
                           "which cannot be replayed")
    max_bytes: int = param(1 << 30, "IQ recording stops (the step table goes on) once the IQ of every radio "
                                    "together would exceed this size, bytes", (0, 1 << 50))


@dataclass(frozen=True)
class ImpairmentsConfig:
    """``hardware.impairments``: what the emulated radios (mock, IIOD Pluto, GNU Radio emulate) do to
    their signals, one model for all of them (``hardware.emulated.impairments``). Real radios
    ignore it."""

    ideal: bool = param(False, "no impairments at all (DSP unit tests); the ADC still saturates")
    crystal_ppm: float = param(25.0, "spread of the radios' crystal errors: each radio's is drawn (seeded by seed "
                                     "and its name) uniformly from ±this, ppm; it shifts LOs and sample clock "
                                     "together (ADALM-Pluto ±25, USRP B200 TCXO ±2)", (0.0, 200.0))
    phase_noise_deg: float = param(0.5, "RMS phase noise of the LOs at a receiver, degrees", (0.0, 30.0))
    phase_noise_corner_hz: float = param(10e3, "corner of the phase noise spectrum (LO PLL bandwidth), Hz",
                                         (1.0, 1e7))
    iq_gain_db: float = param(0.05, "IQ imbalance left after quadrature tracking: Q rail gain against I, dB",
                              (-3.0, 3.0))
    iq_phase_deg: float = param(0.3, "IQ imbalance left after quadrature tracking: Q rail phase error, degrees",
                                (-10.0, 10.0))
    dc_offset_dbfs: float = param(-60.0, "DC offset left after DC tracking at the ADC, dBFS", (-200.0, 0.0))
    seed: int = param(0, "seed of the crystal draws and of the phase noise", (0, 2**32 - 1))
    usrp_standin: bool = param(False, "GNU Radio emulate: run the emulator as a USRP stand-in, the device's sample "
                                      "clock pacing TX and RX (bursts repeat in the flowgraph, as in uhd mode) "
                                      "instead of the client clocking it sample for sample")
    overflow_every_samples: int = param(0, "USRP stand-in: an RX overflow (fault_samples lost) every this many "
                                           "samples, 0 = never", (0, 1 << 40))
    underflow_every_samples: int = param(0, "USRP stand-in: a TX underflow (fault_samples of zeros) every this "
                                            "many samples of a burst, 0 = never", (0, 1 << 40))
    fault_samples: int = param(1024, "USRP stand-in: samples lost or zeroed per injected overflow/underflow",
                               (1, 1 << 20))

    def for_radio(self, entry: RadioEntry, center_hz: float) -> dict:
        """The figures of one radio (``hardware.emulated.impairments.Impairments`` fields): its
        crystal drawn from ±crystal_ppm unless the entry's ``cfo_hz`` overrides it."""
        if self.ideal:
            return {}
        if entry.cfo_hz is not None:
            ppm = -entry.cfo_hz / center_hz * 1e6
        else:
            ppm = float(np.random.default_rng([self.seed, zlib.crc32(entry.name.encode())]).uniform(
                -self.crystal_ppm, self.crystal_ppm))
        return {"crystal_ppm": ppm, "phase_noise_deg": self.phase_noise_deg,
                "phase_noise_corner_hz": self.phase_noise_corner_hz, "iq_gain_db": self.iq_gain_db,
                "iq_phase_deg": self.iq_phase_deg, "dc_offset_dbfs": self.dc_offset_dbfs}

    def radio_seed(self, entry: RadioEntry) -> int:
        """Seed of one radio's phase noise."""
        return self.seed ^ zlib.crc32(entry.name.encode())


def _default_radios() -> tuple[RadioEntry, ...]:
    """Three mock BS radios (one per BS of the paper's network) and one mock UE radio."""
    return tuple(RadioEntry(name=f"bs{b}", role="bs", nodes=[b]) for b in range(3)) + (
        RadioEntry(name="ue0", role="ue", nodes=[]),)


@dataclass(frozen=True)
class HardwareConfig:
    """Radios, RF settings, pilots and hard transmit limits of a bench."""

    radios: tuple[RadioEntry, ...] = param(_default_radios(), "the radio map: every radio and the BSs/UEs it stands for")
    center_hz: float = param(2.44e9, "TX and RX LO of every radio in Hz", (70e6, 6e9))
    sample_rate_hz: float = param(2e6, "baseband sample rate in Hz; the K bands are sub-bands of it", (1e5, 1e8))
    bandwidth_hz: float = param(2e6, "analog RF filter bandwidth in Hz", (2e5, 6e7))
    tx_gain_db: float = param(-30.0, "TX gain in dB (Pluto: -89.75..0 = minus the attenuation)", (-90.0, 90.0))
    rx_gain_db: float = param(30.0, "RX gain in dB (manual gain control)", (-10.0, 90.0))

    max_tx_gain_db: float = param(-10.0, "hard limit: TX gain above this raises SafetyViolation", (-90.0, 90.0))
    allowed_center_hz: list = param([2.44e9], "hard limit: the only centre frequencies a radio may tune to, Hz",
                                    (70e6, 6e9))
    sample_rate_range_hz: list = param([1e6, 4e6], "hard limit: [low, high] sample rate in Hz", (1e5, 1e8))
    max_amplitude: float = param(0.7, "hard limit: peak |IQ| of any TX burst relative to full scale", (0.001, 1.0))
    dry_run: bool = param(False, "build and check every burst, capture, but never transmit")
    calibrate: bool = param(True, "at start, measure every radio's frequency offset against the first UE radio "
                                  "and correct it where the driver can (Pluto: xo_correction)")
    max_cfo_hz: float = param(130e3, "largest offset between two radios the start-up search covers, in Hz "
                                     "(two ±25 ppm Plutos at 2.44 GHz: up to 122 kHz)", (0.0, 1e6))
    max_residual_cfo_hz: float = param(50.0, "largest offset between the BS radios left after calibration, as "
                                             "each UE radio sees them, in Hz; beyond it the run is refused",
                                       (0.0, 1e4))
    start_bridge: bool = param(False, "backend gnuradio: start the radios' flowgraph(s) with the run on free "
                                      "127.0.0.1 ports (the entries' addresses are then unused) and stop them "
                                      "when it ends")
    impairments: ImpairmentsConfig = param(ImpairmentsConfig(), "what the emulated radios do to their signals "
                                                                "(crystal, phase noise, IQ imbalance, DC, ADC)")
    record: RecordConfig = param(RecordConfig(), "recording of the run's captures and steps (``hardware.recording``)")
    replay: str = param("", "backend replay: the directory of a recording (``hardware.record``) to replay; the "
                            "network, env and hardware sections must be the recorded ones")

    fft_size: int = param(1024, "pilot period P in samples (a power of two); the estimator's DFT size", (64, 65536))
    capture_samples: int = param(16384, "samples per capture; a multiple of fft_size, at least 2 periods",
                                 (128, 4_194_304))
    tones_per_bs: int = param(4, "pilot tones of each BS in each band", (1, 64))
    band_fraction: float = param(0.8, "fraction of the sample rate the K bands cover (the rest is guard)", (0.1, 0.95))
    full_scale_dbm: float = param(0.0, "simulated received power in dBm that reaches the receiver at full scale: "
                                       "maps network powers onto the bench", (-200.0, 60.0))
    pilot_snr_db: float = param(20.0, "pilots that would reach a UE radio less than this far above N0 are sent "
                                      "stronger by a known digital gain, divided out of the estimate, in dB",
                                (-20.0, 60.0))
    max_pilot_boost_db: float = param(30.0, "largest such pilot boost in dB (0 = measure every pilot at its "
                                            "network level)", (0.0, 60.0))
    measure_map: bool = param(False, "measure the interference map's BS part: after each step every BS's radio in "
                                     "turn captures while the other BS radios send their pilots at the executed power "
                                     "times the network's BS-to-BS gain; the filter of the next step reads the measured "
                                     "power (false: the model's BS-to-BS gains, plus the sensed external interference)")
    max_turns: int = param(16, "capture turns per step at most; links beyond are simulated and marked "
                               "not measured", (1, 4096))
    timeout_s: float = param(2.0, "timeout of one radio operation in s", (0.01, 600.0))
    settle_s: float = param(0.0, "wait between starting a TX burst and capturing, in s", (0.0, 10.0))

    def __post_init__(self):
        names = [r.name for r in self.radios]
        if len(set(names)) != len(names):
            raise ValueError(f"radios: radio names must be unique, got {names}")
        if not any(r.role == "bs" for r in self.radios) or not any(r.role == "ue" for r in self.radios):
            raise ValueError("radios: the radio map needs at least one bs radio and one ue radio")
        for r in self.radios:
            addresses = (r.control_address, r.tx_address, r.rx_address)
            if r.driver == "gnuradio" and not self.start_bridge and not all(addresses):
                raise ValueError(f"radio {r.name!r}: the gnuradio driver needs control_address, tx_address and "
                                 "rx_address (or start_bridge: true)")
        if len(self.sample_rate_range_hz) != 2 or self.sample_rate_range_hz[0] > self.sample_rate_range_hz[1]:
            raise ValueError(f"sample_rate_range_hz must be [low, high], got {list(self.sample_rate_range_hz)}")
        try:
            self.limits().check_settings(self.settings())   # the drivers' own check, at load time
        except SafetyViolation as err:
            raise ValueError(str(err)) from None
        if any(r.driver == "pluto" for r in self.radios):
            check_pluto_settings(self.settings())         # the Pluto driver's own range check, at load time
        if self.fft_size & (self.fft_size - 1):
            raise ValueError(f"fft_size={self.fft_size} must be a power of two")
        if self.capture_samples % self.fft_size or self.capture_samples < 2 * self.fft_size:
            raise ValueError(f"capture_samples={self.capture_samples} must be a multiple of fft_size={self.fft_size} "
                             "and at least two periods")

    def limits(self) -> TxLimits:
        """The hard transmit limits every radio enforces."""
        return TxLimits(max_tx_gain_db=self.max_tx_gain_db, allowed_center_hz=tuple(self.allowed_center_hz),
                        sample_rate_range_hz=tuple(self.sample_rate_range_hz), max_amplitude=self.max_amplitude)

    def settings(self) -> RadioSettings:
        """The RF settings every radio is configured with."""
        return RadioSettings(center_hz=self.center_hz, sample_rate_hz=self.sample_rate_hz,
                             bandwidth_hz=self.bandwidth_hz, tx_gain_db=self.tx_gain_db, rx_gain_db=self.rx_gain_db)

    def radios_with_role(self, role: str) -> tuple[RadioEntry, ...]:
        """The radio entries of one role ('bs' or 'ue'), in config order."""
        return tuple(r for r in self.radios if r.role == role)

    def pilot_plan(self, num_bs: int, num_bands: int) -> PilotPlan:
        """The pilot layout of a network of num_bs BSs and num_bands bands on this bench."""
        return PilotPlan(num_bs, num_bands, self.fft_size, self.tones_per_bs, self.band_fraction)
