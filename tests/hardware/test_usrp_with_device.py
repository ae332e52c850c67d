"""ZmqRadio on a real USRP through the bridge flowgraph in uhd mode. Runs only with
``--usrp-args`` (UHD device arguments, e.g. ``type=b200`` or ``addr=192.168.10.2``).

The TX gain stays at the bottom of the B2xx range (0 dB, about -60 dBm out at 2.44 GHz); put a
50-ohm load or an attenuator on the TX/RX port. The flowgraph's own status tells whether its
TX gate is open, and a capture tells that the USRP streams.

    python -m pytest tests/hardware/test_usrp_with_device.py --usrp-args type=b200
"""
from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from hardware.gnuradio_bridge.process import FlowgraphProcess
from hardware.radio import RadioError, RadioSettings, RadioTimeout, TxLimits
from hardware.drivers.gnuradio import ZmqRadio
from tests.hardware.radio_contract import RadioContract, safe_powers

pytestmark = pytest.mark.usrp_device

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
