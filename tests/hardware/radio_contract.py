"""The contract every radio driver passes. Subclass ``RadioContract`` in a ``test_*.py`` file and
provide:

- fixture ``radio``: an open, unconfigured driver built with ``self.LIMITS`` and dry_run=False;
  close it after the test (closing twice must be harmless);
- fixture ``dry_radio``: the same with dry_run=True;
- ``radiating(radio) -> bool``: whether the RF side (medium, emulator, flowgraph) hears the
  radio transmit right now;
- ``stall(radio)``: make the radio's next operation time out (stop answering, pause the
  emulator, ...).

Override ``SETTINGS`` / ``LIMITS`` / ``OUT_OF_RANGE`` if the device needs other values.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hardware.dsp import PilotPlan
from hardware.radio import Radio, RadioError, RadioSettings, RadioTimeout, SafetyViolation, TxBurst, TxLimits
from hardware.transmitter import Transmitter
from sim.safety import apply_safety_filter

LEVEL_POWER_FS = torch.tensor([0.0, 1e-3, 1e-2, 1e-1])


def safe_powers(level: int = 3, masked_band: int | None = None):
    """SafePowers [1, 1, 2] from the real safety filter: BS 0 asks for ``level`` on two bands;
    ``masked_band`` gets interference above I_max so the filter zeroes it."""
    interference = torch.zeros(1, 1, 2)
    if masked_band is not None:
        interference[0, 0, masked_band] = 1.0
    return apply_safety_filter(torch.full((1, 1, 2), level), interference, LEVEL_POWER_FS, i_max_w=1e-9)


class RadioContract:
    SETTINGS = RadioSettings(center_hz=2.44e9, sample_rate_hz=2e6, bandwidth_hz=2e6, tx_gain_db=-30.0, rx_gain_db=30.0)
    LIMITS = TxLimits(max_tx_gain_db=-10.0, allowed_center_hz=(2.44e9,), sample_rate_range_hz=(1e6, 4e6),
                      max_amplitude=0.7)
    OUT_OF_RANGE = {"tx_gain_db": -9.0, "center_hz": 2.45e9, "sample_rate_hz": 5e6}
    CAPTURE_SAMPLES = 4096

    # --- hooks for the driver's test module ---------------------------------------------
    @pytest.fixture
    def radio(self) -> Radio:
        raise NotImplementedError("the driver's test class provides the radio fixture")

    @pytest.fixture
    def dry_radio(self) -> Radio:
        raise NotImplementedError("the driver's test class provides the dry_radio fixture")

    def radiating(self, radio: Radio) -> bool:
        raise NotImplementedError

    def stall(self, radio: Radio) -> None:
        raise NotImplementedError

    # --- helpers --------------------------------------------------------------------------
    def transmitter(self, radio: Radio) -> Transmitter:
        plan = PilotPlan(num_bs=1, num_bands=2, fft_size=256, tones_per_bs=2)
        return Transmitter({radio.name: radio}, [radio.name], plan)

    def start_tx(self, radio: Radio) -> None:
        radio.configure(self.SETTINGS)
        self.transmitter(radio).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
        assert self.radiating(radio), "a transmitted burst must be on air"

    # --- the contract ---------------------------------------------------------------------
    def test_configure_in_range(self, radio):
        radio.configure(self.SETTINGS)
        assert radio.settings == self.SETTINGS

    @pytest.mark.parametrize("field", ["tx_gain_db", "center_hz", "sample_rate_hz"])
    def test_out_of_range_settings_raise(self, radio, field):
        bad = dataclasses.replace(self.SETTINGS, **{field: self.OUT_OF_RANGE[field]})
        with pytest.raises(SafetyViolation, match=field):
            radio.configure(bad)
        assert radio.settings is None
        assert not self.radiating(radio)

    def test_capture_returns_complex_samples(self, radio):
        radio.configure(self.SETTINGS)
        iq = radio.capture(self.CAPTURE_SAMPLES)
        assert iq.shape == (self.CAPTURE_SAMPLES,)
        assert np.iscomplexobj(iq) and np.all(np.isfinite(iq))

    def test_transmit_is_heard_and_mute_is_idempotent(self, radio):
        self.start_tx(radio)
        assert not radio.muted
        radio.mute()
        assert radio.muted and not self.radiating(radio)
        radio.mute()
        assert radio.muted and not self.radiating(radio)

    def test_close_mutes_and_is_final(self, radio):
        self.start_tx(radio)
        radio.close()
        assert radio.muted and not self.radiating(radio)
        radio.close()
        with pytest.raises(RadioError):
            radio.capture(self.CAPTURE_SAMPLES)

    def test_context_manager_mutes_on_error(self, radio):
        with pytest.raises(KeyError):
            with radio:
                self.start_tx(radio)
                raise KeyError("boom")
        assert radio.muted and not self.radiating(radio)

    @pytest.mark.parametrize("thing", ["array", "tuple", "forged"])
    def test_nothing_radiates_without_the_transmitter(self, radio, thing):
        radio.configure(self.SETTINGS)
        iq = np.full(256, 0.1, dtype=np.complex64)
        with pytest.raises(SafetyViolation):
            if thing == "array":
                radio.send(iq)
            elif thing == "tuple":
                radio.send((iq, True))
            else:
                radio.send(TxBurst(iq, cyclic=True))
        assert not self.radiating(radio)

    def test_transmitter_refuses_raw_powers(self, radio):
        radio.configure(self.SETTINGS)
        with pytest.raises(SafetyViolation):
            self.transmitter(radio).transmit(LEVEL_POWER_FS[[3, 3]].view(1, 1, 2), 0, np.ones((1, 2)))
        assert not self.radiating(radio)

    def test_masked_band_is_silent(self, radio):
        radio.configure(self.SETTINGS)
        tx = self.transmitter(radio)
        safe = safe_powers(masked_band=1)
        assert safe.power_w[0, 0, 1] == 0 and safe.blocked[0, 0, 1]
        burst = tx.transmit(safe, 0, np.full((1, 2), 0.5))[radio.name]
        spectrum = np.abs(np.fft.fft(burst.iq)) / burst.iq.size
        assert spectrum[tx.plan.pilot_bins[0, 1]].max() < 1e-6
        assert spectrum[tx.plan.pilot_bins[0, 0]].min() > 0.1

    def test_burst_over_amplitude_limit_raises(self, radio):
        radio.configure(self.SETTINGS)
        with pytest.raises(SafetyViolation, match="max_amplitude"):
            self.transmitter(radio).transmit(safe_powers(), 0, np.full((1, 2), 50.0))
        assert not self.radiating(radio)
        # the radio checks too, should a burst ever reach it unchecked
        from hardware.radio import _BURST_KEY
        with pytest.raises(SafetyViolation, match="max_amplitude"):
            radio.send(TxBurst(np.full(256, 0.9, dtype=np.complex64), _key=_BURST_KEY))
        assert not self.radiating(radio)

    def test_send_before_configure_raises(self, radio):
        from hardware.radio import _BURST_KEY
        with pytest.raises(RadioError):
            radio.send(TxBurst(np.full(256, 0.1, dtype=np.complex64), _key=_BURST_KEY))
        assert not self.radiating(radio)

    def test_timeout_raises_radio_timeout(self, radio):
        radio.configure(self.SETTINGS)
        self.stall(radio)
        with pytest.raises(RadioTimeout):
            radio.capture(self.CAPTURE_SAMPLES)

    def test_dry_run_never_radiates(self, dry_radio):
        dry_radio.configure(self.SETTINGS)
        bursts = self.transmitter(dry_radio).transmit(safe_powers(), 0, np.full((1, 2), 0.5))
        assert bursts[dry_radio.name].iq.size > 0
        assert not self.radiating(dry_radio)
        assert dry_radio.capture(self.CAPTURE_SAMPLES).shape == (self.CAPTURE_SAMPLES,)
