"""ZmqRadio on a real USRP through the bridge flowgraph in uhd mode. Runs only with
``--usrp-args`` (UHD device arguments, e.g. ``type=b200`` or ``addr=192.168.10.2``).

The TX gain stays at the bottom of the B2xx range (0 dB, about -60 dBm out at 2.44 GHz); put a
50-ohm load or an attenuator on the TX/RX port. The flowgraph's own status tells whether its
TX gate is open, and a capture tells that the USRP streams.

    python -m pytest tests/hardware/test_usrp_with_device.py --usrp-args type=b200

The start-up calibration and TX switch tests need an RF path and ``--usrp-ue-args``: a second USRP
whose RX2 is cabled from the first's TX/RX through an attenuator (configs/bench_usrp.yaml's bench;
its ue0 ``link_gain_db`` should match the cabling), or the same arguments with the one USRP's
TX/RX cabled into its own RX2 through 30 dB or more:

    python -m pytest tests/hardware/test_usrp_with_device.py --usrp-args serial=A --usrp-ue-args serial=B

``usrp_bench``, ``calibrate_usrps`` and ``tx_switch_on_the_bridge`` are what they run;
tests/hardware/test_device_checks.py runs them on the USRP stand-in and on the uhd flowgraph over a
fake of gr-uhd with a loopback cable.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from hardware.gnuradio_bridge.process import GNURADIO_PYTHON, FlowgraphProcess, uhd_flowgraph
from hardware.measured import close_all
from hardware.radio import RadioError, RadioSettings, RadioTimeout, TxLimits
from hardware.drivers.gnuradio import ZmqRadio
from testbed.config import load_config
from tests.hardware.device_checks import check_calibration, check_tx_switch, latency_wait_s, start_up_calibration
from tests.hardware.radio_contract import RadioContract, safe_powers

pytestmark = pytest.mark.usrp_device

UHD_TX_BUFFER_SAMPLES = 32768   # UHD's send frames between the USRP sink and the DAC (B2xx on USB: 16 x ~2000)
SWITCH_MARGIN_SAMPLES = 16384

SETTINGS = RadioSettings(center_hz=2.44e9, sample_rate_hz=2e6, bandwidth_hz=2e6, tx_gain_db=0.0, rx_gain_db=20.0)
LIMITS = TxLimits(max_tx_gain_db=10.0, allowed_center_hz=(2.44e9,), sample_rate_range_hz=(1e6, 4e6),
                  max_amplitude=0.7)


@pytest.fixture(scope="module")
def usrp(request):
    """One uhd-mode flowgraph on the USRP for the module (its hard cap: 10 dB TX gain)."""
    fg = FlowgraphProcess("uhd", tx=["usrp"], rx=["usrp"], device_args=request.config.getoption("usrp_args"),
                          sample_rate_hz=2e6, center_hz=2.44e9, tx_gain_db=0.0, rx_gain_db=20.0,
                          max_tx_gain_db=10.0, heartbeat_timeout_s=3.0, ready_timeout_s=60.0)
    with fg:
        yield fg


def tx_enabled(fg: FlowgraphProcess) -> bool:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fg.control_address)
    try:
        sock.send(b'{"cmd": "status"}')
        assert sock.poll(5000), "the flowgraph does not answer"
        return json.loads(sock.recv())["tx_enabled"]["usrp"]
    finally:
        sock.close(0)


class TestUsrpDeviceContract(RadioContract):
    SETTINGS = SETTINGS
    LIMITS = LIMITS
    OUT_OF_RANGE = {"tx_gain_db": 11.0, "center_hz": 2.45e9, "sample_rate_hz": 5e6}

    @pytest.fixture
    def radio(self, usrp):
        r = ZmqRadio("usrp", self.LIMITS, SimpleNamespace(**usrp.endpoints("usrp")), timeout_s=2.0)
        r.fg = usrp
        yield r
        usrp.signal(signal.SIGCONT)
        r.close()

    @pytest.fixture
    def dry_radio(self, usrp):
        r = ZmqRadio("usrp", self.LIMITS, SimpleNamespace(**usrp.endpoints("usrp")), dry_run=True, timeout_s=2.0)
        r.fg = usrp
        yield r
        r.close()

    def radiating(self, radio):
        return tx_enabled(radio.fg) and radio.transmitting

    def stall(self, radio):
        radio.fg.signal(signal.SIGSTOP)


def test_usrp_streams_and_its_noise_floor_is_sane(usrp):
    with ZmqRadio("usrp", LIMITS, SimpleNamespace(**usrp.endpoints("usrp"))) as radio:
        radio.configure(SETTINGS)
        iq = radio.capture(65536)
    power = float(np.mean(np.abs(iq) ** 2))
    assert iq.shape == (65536,) and np.all(np.isfinite(iq))
    assert 0 < power < 0.1                       # something comes in, far from full scale


def test_usrp_gain_outside_the_device_range_is_refused(usrp):
    wide = TxLimits(max_tx_gain_db=200.0, allowed_center_hz=(2.44e9,), sample_rate_range_hz=(1e6, 4e6))
    with ZmqRadio("usrp", wide, SimpleNamespace(**usrp.endpoints("usrp"))) as radio:
        with pytest.raises(RadioError, match="hard limit|outside the USRP's range"):
            radio.configure(RadioSettings(2.44e9, 2e6, 2e6, tx_gain_db=150.0, rx_gain_db=20.0))


def test_usrp_transmit_mute_and_stall(usrp):
    with ZmqRadio("usrp", LIMITS, SimpleNamespace(**usrp.endpoints("usrp")), timeout_s=1.0) as radio:
        radio.configure(SETTINGS)
        RadioContract().transmitter(radio).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
        assert tx_enabled(usrp) and radio.transmitting
        radio.mute()
        assert not tx_enabled(usrp) and not radio.transmitting
        usrp.signal(signal.SIGSTOP)
        try:
            with pytest.raises(RadioTimeout):
                radio.capture(4096)
        finally:
            usrp.signal(signal.SIGCONT)
        assert radio.capture(4096).shape == (4096,)


# --- calibration and TX switch latency (shared with tests/hardware/test_device_checks.py) -----------
@contextlib.contextmanager
def usrp_bench(config, python: str = GNURADIO_PYTHON):
    """configs/bench_usrp.yaml's radios as ``config`` gives them: one uhd flowgraph per distinct
    ``device_args``, a ZmqRadio per flowgraph (two entries on one USRP share it); yields the
    radios by entry name, closes them and stops the flowgraphs."""
    hw = config.hardware
    flowgraphs, radios, by_args = [], {}, {}
    try:
        for e in hw.radios:
            if e.device_args not in by_args:
                fg = uhd_flowgraph(hw, e, python=python, ready_timeout_s=60.0)
                flowgraphs.append(fg.start())
                by_args[e.device_args] = ZmqRadio(e.name, hw.limits(), e, timeout_s=hw.timeout_s)
            radios[e.name] = by_args[e.device_args]
        yield radios
    finally:
        close_all(radios)
        for fg in flowgraphs:
            fg.stop()


def usrp_bench_config(bs_args: str, ue_args: str, overrides: dict | None = None):
    """configs/bench_usrp.yaml with its two radios on these USRPs."""
    config = load_config("bench_usrp", overrides)
    hw = config.hardware
    args = {"bs0": bs_args, "ue0": ue_args}
    radios = tuple(dataclasses.replace(e, device_args=args[e.name]) for e in hw.radios)
    return dataclasses.replace(config, hardware=dataclasses.replace(hw, radios=radios))


def calibrate_usrps(config, radios: dict[str, ZmqRadio]) -> dict:
    """The start-up calibration on these radios; checks every residual is within
    ``max_residual_cfo_hz`` and returns the calibration report."""
    return check_calibration(start_up_calibration(config, radios))


def tx_switch_on_the_bridge(tx: ZmqRadio, rx: ZmqRadio, transport_samples: int = UHD_TX_BUFFER_SAMPLES) -> dict:
    """Burst A, burst B, mute on ``tx``, each captured on ``rx`` after the bridge's documented
    latency: the 3 flowgraph buffers after the swap (``burst_buffer_items`` each) and the device's
    own TX buffering (``transport_samples``), plus SWITCH_MARGIN_SAMPLES, at the sample rate."""
    status = tx.bridge.request("status")
    fs = status["settings"][tx.name]["sample_rate_hz"]
    latency = 3 * status["burst_buffer_items"] + transport_samples
    return check_tx_switch(tx, rx, latency_wait_s(latency, SWITCH_MARGIN_SAMPLES, fs))


@pytest.fixture(scope="module")
def pair(request):
    config = usrp_bench_config(request.config.getoption("usrp_args"), request.config.getoption("usrp_ue_args"))
    with usrp_bench(config) as radios:
        yield config, radios


@pytest.mark.usrp_pair
def test_start_up_calibration_leaves_a_residual_within_max_residual_cfo_hz(pair):
    config, radios = pair
    report = calibrate_usrps(config, radios)
    status = radios["bs0"].bridge.request("status")
    assert status["lo_correction_hz"]["bs0"] == pytest.approx(report["bs0"]["corrected_hz"], abs=1.0)


@pytest.mark.usrp_pair
def test_tx_switch_latency_through_the_cable(pair):
    config, radios = pair
    for r in {id(r): r for r in radios.values()}.values():
        r.configure(config.hardware.settings())
    figures = tx_switch_on_the_bridge(radios["bs0"], radios["ue0"])
    assert figures["B"]["wanted_db"] > 20.0 and figures["mute"]["unwanted_db"] < 10.0
