"""The uhd-mode flowgraph, whole, on a fake of gr-uhd (``tests/hardware/fake_uhd.py``: a B200-like
device with UHD's tune arithmetic, sensors, references and a loopback cable): the digital LO
correction (RF LO kept, DSP shifted, reported back, refused beyond the bound), the 10 MHz / PPS
references (refused when they do not lock, naming the radio), and the device tests' calibration
and TX switch checks through the loopback."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hardware.config import RadioEntry
from hardware.drivers.gnuradio import ZmqRadio
from hardware.gnuradio_bridge.process import GNURADIO_PYTHON, BridgeStartError, free_port, uhd_flowgraph
from hardware.radio import RadioError
from testbed.config import load_config
from tests.hardware.test_usrp_with_device import (calibrate_usrps, tx_switch_on_the_bridge, usrp_bench,
                                                  usrp_bench_config)

FAKE_UHD = Path(__file__).with_name("fake_uhd.py")
HW = load_config("bench_usrp", {"hardware": {"max_cfo_hz": 10e3}}).hardware


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory) -> str:
    """An interpreter for FlowgraphProcess that runs the flowgraph with the fake gr-uhd installed."""
    path = tmp_path_factory.mktemp("fake_uhd") / "python"
    path.write_text(f'#!/bin/sh\nexec {GNURADIO_PYTHON} {FAKE_UHD} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def usrp_entry(**fields) -> RadioEntry:
    ports = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("control_address", "tx_address", "rx_address")}
    return RadioEntry(**{"name": "usrp0", "driver": "gnuradio", "role": "bs", "nodes": [0],
                         "device_args": "type=fake", **ports, **fields})


def test_lo_correction_is_digital_reported_back_and_bounded(fake_python):
    entry = usrp_entry()
    with uhd_flowgraph(HW, entry, python=fake_python) as fg:
        with ZmqRadio("usrp0", HW.limits(), entry) as radio:
            radio.configure(HW.settings())
            assert radio.correct_lo(1234.5) == pytest.approx(1234.5, abs=0.01)
            assert radio.correct_lo(-234.5) == pytest.approx(1000.0, abs=0.01)       # on top of the first
            status = radio.bridge.request("status")
            tune = status["tune"]["usrp0"]
            for side, sign in (("rx", 1), ("tx", -1)):                                # RX at rf - dsp, TX at rf + dsp
                assert tune[side]["rf_hz"] == pytest.approx(HW.center_hz, abs=3.0)    # the LO stays where asked
                assert tune[side]["dsp_hz"] == pytest.approx(sign * (1000.0 + tune[side]["rf_hz"] - HW.center_hz),
                                                             abs=0.01)
                assert tune[side]["lo_correction_hz"] == pytest.approx(1000.0, abs=0.01)
            assert status["lo_correction_hz"]["usrp0"] == pytest.approx(1000.0, abs=0.01)
            assert status["max_lo_correction_hz"] == HW.max_cfo_hz
            with pytest.raises(ValueError, match=r"usrp0: LO correction \+11000 Hz is beyond the bridge's bound "
                                                 r"±10000 Hz \(hardware.max_cfo_hz\)"):
                radio.correct_lo(10e3)
            with pytest.raises(RadioError, match="lo_correction_hz=-20000 for node 'usrp0' is beyond the bridge's "
                                                 "bound"):
                radio.bridge.request("set_lo_correction", node="usrp0", lo_correction_hz=-20e3)
            assert radio.bridge.request("status")["lo_correction_hz"]["usrp0"] == pytest.approx(1000.0, abs=0.01)
        assert fg.running


def test_an_external_reference_that_locks_is_used_and_reported(fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_UHD_REF", "locks")
    entry = usrp_entry(clock_source="external", time_source="external")
    with uhd_flowgraph(HW, entry, python=fake_python) as fg:
        with ZmqRadio("usrp0", HW.limits(), entry) as radio:
            refs = radio.bridge.request("status")["references"]
    assert refs == {"clock_source": "external", "time_source": "external", "ref_locked": True}
    assert fg.stop() == 0


@pytest.mark.parametrize("env,fields,error", [
    ({"FAKE_UHD_REF": "none"}, {"clock_source": "external"},
     "usrp0: clock_source='external' did not lock within 1 s (sensor ref_locked is false)"),
    ({}, {"clock_source": "gpsdo"}, "usrp0: clock_source='gpsdo' is not one this USRP offers (['internal', 'external'])"),
    ({"FAKE_UHD_PPS": "no"}, {"time_source": "external"}, "usrp0: time_source='external' gave no PPS edge"),
])
def test_a_reference_that_does_not_lock_refuses_to_start_naming_the_radio(fake_python, monkeypatch, env, fields,
                                                                          error):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BridgeStartError, match="exited with code 3") as info:
        uhd_flowgraph(HW, usrp_entry(**fields), python=fake_python).start()
    assert error in str(info.value)


def test_references_are_radio_entry_fields_for_usrps_only():
    assert usrp_entry(clock_source="mimo").clock_source == "mimo"
    with pytest.raises(ValueError, match="radio 'm': clock_source=external applies to a USRP"):
        RadioEntry(name="m", driver="mock", nodes=[0], clock_source="external")


def test_device_checks_on_one_fake_usrp_cabled_into_itself(fake_python):
    """The USRP device tests' calibration and TX switch checks, one USRP for both radios (the
    loopback of their docstring): a residual within bounds, and each switch holding only the present."""
    config = usrp_bench_config("type=fake", "type=fake")
    with usrp_bench(config, python=fake_python) as radios:
        report = calibrate_usrps(config, radios)
        assert abs(report["bs0"]["offset_hz"]) < 1.0          # one device, one TCXO
        figures = tx_switch_on_the_bridge(radios["bs0"], radios["ue0"])
    assert figures["B"]["wanted_db"] > 20.0 and figures["mute"]["unwanted_db"] < 10.0
