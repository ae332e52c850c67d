"""The ADALM-Pluto as libiio sees it: devices, channels, attributes, value ranges, context XML.

Used by the IIOD emulator (``hardware.emulated.iiod``). Ranges are those of a stock Pluto
(AD9363): LO 325 MHz–3.8 GHz, RF bandwidth 200 kHz–20 MHz, sample rate 2.083–61.44 MS/s
(down to 520.833 kS/s with the decimate-by-4 FIR enabled), TX attenuation 0–89.75 dB in
0.25 dB steps, RX gain -3..71 dB (-1..73 dB below 1.3 GHz) in 1 dB steps. Writes outside a range
raise :class:`AttrError` with ``-EINVAL`` like the ad9361 driver; the driver's quantisation
(TX attenuation truncated to 0.25 dB, RX gain to whole dB) is reproduced.

Attributes the kernel shares by channel type carry the shared file name (``in_voltage_rf_bandwidth``,
``out_voltage_sampling_frequency``), as gr-iio looks them up. ``direct_reg_access`` (debug) reads and
writes registers as the kernel's debugfs does (write ``addr`` then read ``0x<value>``, or write
``addr value``): SPI registers 0x000–0x3FF on ad9361-phy, AXI core registers 0x80000000+ on the
streaming cores, where 0x80000088 is the status register (write 1 to clear): bit 2 RX overflow on
cf-ad9361-lpc, bit 0 TX underflow on cf-ad9361-dds-core-lpc (what gr-iio and
``iio_adi_xflow_check`` poll). ``xo_correction`` (Hz, the reference clock the AD9361 assumes) is
settable within ``xo_correction_available``. The DDS (altvoltage0–3) is enabled at boot with the
stock tones (9.28 MHz, scale 0.25 each: the two tones of a channel sum to −6 dBFS); ``raw`` is one
enable for all four, as in the cf-axi-dds driver.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

__all__ = ["AttrError", "PlutoModel", "LIBIIO_VERSION"]

LIBIIO_VERSION = ("0", "24", "c4498c2")   # major, minor, git tag the emulated iiod reports

LO_RANGE_HZ = (325_000_000, 3_800_000_000)
BW_RANGE_HZ = (200_000, 20_000_000)
RATE_MAX_HZ = 61_440_000
RATE_MIN_HZ = 25_000_000 // 12               # 2083333 S/s without the FIR
FIR_MAX_INPUT_HZ = 122_880_000             # sample rate times FIR decimation may not exceed this
TX_ATTEN_MAX_MDB = 89_750
XO_NOMINAL_HZ = 40_000_000
XO_RANGE_HZ = (39_992_000, 40_008_000)     # xo_correction_available of a stock Pluto (±200 ppm)
STATUS_REG = 0x80000088                    # AXI ADC/DAC core status (ADI_REG_STATUS), write 1 to clear
RX_OVERFLOW = 1 << 2
TX_UNDERFLOW = 1 << 0
_REG_RANGES = {"ad9361-phy": (0, 0x3FF), "cf-ad9361-lpc": (0x80000000, 0x8000FFFF),
               "cf-ad9361-dds-core-lpc": (0x80000000, 0x8000FFFF)}
_REG_DEFAULTS = {"ad9361-phy": {0x037: 0x0A},                  # product ID
                 "cf-ad9361-lpc": {0x80000000: 0x000A0162},    # core version 10.01.b
                 "cf-ad9361-dds-core-lpc": {0x80000000: 0x00090162}}
GAIN_MODES = ("manual", "fast_attack", "slow_attack", "hybrid")


# The document type libiio 0.24 validates the context description against.
_DTD = ("<!DOCTYPE context ["
        "<!ELEMENT context (device | context-attribute)*>"
        "<!ELEMENT context-attribute EMPTY>"
        "<!ELEMENT device (channel | attribute | debug-attribute | buffer-attribute)*>"
        "<!ELEMENT channel (scan-element?, attribute*)>"
        "<!ELEMENT attribute EMPTY><!ELEMENT scan-element EMPTY>"
        "<!ELEMENT debug-attribute EMPTY><!ELEMENT buffer-attribute EMPTY>"
        "<!ATTLIST context name CDATA #REQUIRED version-major CDATA #REQUIRED "
        "version-minor CDATA #REQUIRED version-git CDATA #REQUIRED description CDATA #IMPLIED>"
        "<!ATTLIST context-attribute name CDATA #REQUIRED value CDATA #REQUIRED>"
        "<!ATTLIST device id CDATA #REQUIRED name CDATA #IMPLIED label CDATA #IMPLIED>"
        "<!ATTLIST channel id CDATA #REQUIRED type (input|output) #REQUIRED name CDATA #IMPLIED>"
        "<!ATTLIST scan-element index CDATA #REQUIRED format CDATA #REQUIRED scale CDATA #IMPLIED>"
        "<!ATTLIST attribute name CDATA #REQUIRED filename CDATA #IMPLIED value CDATA #IMPLIED>"
        "<!ATTLIST debug-attribute name CDATA #REQUIRED>"
        "<!ATTLIST buffer-attribute name CDATA #REQUIRED>]>")


class AttrError(Exception):
    """An attribute access the device refuses; ``code`` is the positive errno."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class _Channel:
    id: str
    output: bool
    attrs: dict[str, str]
    name: str | None = None
    scan_index: int | None = None
    fmt: str | None = None               # scan-element format, e.g. "le:S12/16>>0"
    shared: frozenset = frozenset()      # attributes shared by channel type: file name without the index


@dataclass
class _Device:
    id: str
    name: str
    channels: list[_Channel]
    attrs: dict[str, str] = field(default_factory=dict)
    debug: dict[str, str] = field(default_factory=dict)
    buffer: dict[str, str] = field(default_factory=dict)


# attribute key: (device id, section, attribute name); section is "dev", "debug", "buffer",
# or ("in"|"out", channel id)
Key = tuple


def _lo(chan_id: str, name: str) -> _Channel:
    """An LO channel (RX_LO or TX_LO) of ad9361-phy."""
    return _Channel(chan_id, True, name=name, attrs={
        "external": "0", "fastlock_load": "0", "fastlock_recall": "0", "fastlock_save": "0 0",
        "fastlock_store": "0", "frequency": "2400000000",
        "frequency_available": f"[{LO_RANGE_HZ[0]} 1 {LO_RANGE_HZ[1]}]", "powerdown": "0"})


def _pluto_devices() -> list[_Device]:
    phy_in = {
        "bb_dc_offset_tracking_en": "1", "filter_fir_en": "0", "gain_control_mode": "slow_attack",
        "gain_control_mode_available": " ".join(GAIN_MODES), "hardwaregain": "71.000000 dB",
        "hardwaregain_available": "[-3 1 71]", "quadrature_tracking_en": "1",
        "rf_bandwidth": "18000000", "rf_bandwidth_available": f"[{BW_RANGE_HZ[0]} 1 {BW_RANGE_HZ[1]}]",
        "rf_dc_offset_tracking_en": "1", "rf_port_select": "A_BALANCED",
        "rf_port_select_available": "A_BALANCED B_BALANCED C_BALANCED A_N A_P B_N B_P C_N C_P "
                                    "TX_MONITOR1 TX_MONITOR2 TX_MONITOR1_2",
        "rssi": "110.25 dB", "sampling_frequency": "30720000",
        "sampling_frequency_available": f"[{RATE_MIN_HZ} 1 {RATE_MAX_HZ}]"}
    phy_out = {
        "filter_fir_en": "0", "hardwaregain": "-10.000000 dB",
        "hardwaregain_available": "[-89.750000 0.250000 0.000000]", "rf_bandwidth": "18000000",
        "rf_bandwidth_available": f"[{BW_RANGE_HZ[0]} 1 {BW_RANGE_HZ[1]}]", "rf_port_select": "A",
        "rf_port_select_available": "A B", "rssi": "0.00 dB", "sampling_frequency": "30720000",
        "sampling_frequency_available": f"[{RATE_MIN_HZ} 1 {RATE_MAX_HZ}]"}
    in_shared = frozenset(k for k in phy_in if k not in ("hardwaregain", "hardwaregain_available", "rssi",
                                                         "rf_port_select", "gain_control_mode"))
    out_shared = frozenset(k for k in phy_out if k not in ("hardwaregain", "hardwaregain_available", "rssi",
                                                           "rf_port_select"))
    phy = _Device("iio:device0", "ad9361-phy", [
        _lo("altvoltage1", "TX_LO"), _Channel("voltage0", False, phy_in, shared=in_shared),
        _Channel("voltage0", True, phy_out, shared=out_shared), _lo("altvoltage0", "RX_LO"),
        _Channel("temp0", False, {"input": "31500"}),
        _Channel("out", False, {"voltage_filter_fir_en": "0"})],
        attrs={"calib_mode": "auto",
               "calib_mode_available": "auto manual manual_tx_quad tx_quad rf_dc_offs rssi_gain_step",
               "ensm_mode": "fdd", "ensm_mode_available": "sleep wait alert fdd pinctrl pinctrl_fdd_indep",
               "filter_fir_config": "", "rx_path_rates": "", "tx_path_rates": "",
               "trx_rate_governor": "nominal", "trx_rate_governor_available": "nominal highest_osr",
               "xo_correction": str(XO_NOMINAL_HZ), "xo_correction_available": f"[{XO_RANGE_HZ[0]} 1 {XO_RANGE_HZ[1]}]"},
        debug={"loopback": "0", "bist_prbs": "0", "bist_tone": "0", "initialize": "0", "direct_reg_access": "0x0"})
    xadc = _Device("iio:device1", "xadc", [
        _Channel("temp0", False, {"offset": "-2219", "raw": "2627", "scale": "123.040771484"}),
        _Channel("voltage0", False, {"raw": "1371", "scale": "0.732421875"}, name="vccint")],
        attrs={"sampling_frequency": "961538"})
    dds_attrs = {"calibphase": "0.000000", "calibscale": "1.000000", "sampling_frequency": "30720000"}
    tx_chans = [_Channel(f"voltage{i}", True, dict(dds_attrs), scan_index=i, fmt="le:S16/16>>0",
                         shared=frozenset({"sampling_frequency"})) for i in range(2)]
    tone_names = ("TX1_I_F1", "TX1_I_F2", "TX1_Q_F1", "TX1_Q_F2")
    tones = [_Channel(f"altvoltage{i}", True, name=n, attrs={
        "frequency": "9279985", "phase": "90000" if "_I_" in n else "0", "raw": "1",
        "sampling_frequency": "30720000", "scale": "0.250000"}, shared=frozenset({"sampling_frequency"}))
        for i, n in enumerate(tone_names)]
    dds = _Device("iio:device2", "cf-ad9361-dds-core-lpc", tx_chans + tones,
                  buffer={"data_available": "0"}, debug={"direct_reg_access": "0x0"})
    adc_attrs = {"calibbias": "0", "calibphase": "0.000000", "calibscale": "1.000000",
                 "samples_pps": "0", "sampling_frequency": "30720000"}
    rx_chans = [_Channel(f"voltage{i}", False, dict(adc_attrs), scan_index=i, fmt="le:S12/16>>0",
                         shared=frozenset({"sampling_frequency", "samples_pps"})) for i in range(2)]
    adc = _Device("iio:device3", "cf-ad9361-lpc", rx_chans, buffer={"data_available": "0"},
                  debug={"direct_reg_access": "0x0"})
    return [phy, xadc, dds, adc]


def _int_in(text: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise AttrError(errno.EINVAL, f"{what}: not a number: {text!r}") from None
    if not lo <= value <= hi:
        raise AttrError(errno.EINVAL, f"{what}={value} outside [{lo}, {hi}]")
    return value


def _parse_fir(text: str) -> int:
    """Validate a FIR configuration ('RX 3 GAIN -6 DEC 4' ...); returns its decimation."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    dec, num_taps = 0, 0
    for ln in lines:
        words = ln.split()
        if words[0] == "RX" and "DEC" in words:
            dec = int(words[words.index("DEC") + 1])
        elif words[0] in ("TX", "RXG", "TXG", "RXBW", "TXBW"):
            continue
        elif all(v.strip().lstrip("-").isdigit() for v in ln.split(",")):
            num_taps += 1
        else:
            raise AttrError(errno.EINVAL, f"filter_fir_config: bad line {ln!r}")
    if dec not in (1, 2, 4) or not 16 <= num_taps <= 128 or num_taps % 16:
        raise AttrError(errno.EINVAL, f"filter_fir_config: bad decimation {dec} or {num_taps} taps")
    return dec


class PlutoModel:
    """Attribute store of one emulated Pluto, with the device's validation and derived values."""

    def __init__(self):
        self.devices = _pluto_devices()
        self.values: dict[Key, str] = {}
        for dev in self.devices:
            for sec, table in (("dev", dev.attrs), ("debug", dev.debug), ("buffer", dev.buffer)):
                for name, v in table.items():
                    self.values[(dev.id, sec, name)] = v
            for ch in dev.channels:
                for name, v in ch.attrs.items():
                    self.values[(dev.id, ("out" if ch.output else "in", ch.id), name)] = v
        self.regs = {name: dict(regs) for name, regs in _REG_DEFAULTS.items()}   # device name -> {address: value}
        self._reg_addr = {name: 0 for name in _REG_DEFAULTS}                    # address the next read returns
        self.fir_dec = 4              # decimation of the loaded FIR (applies when it is enabled)
        self.fir_taps = 128
        self._writers = self._writer_table()
        self._set_rate(30_720_000)
        self._refresh_gain_range()

    # --- lookups ----------------------------------------------------------------------
    def device(self, ref: str) -> _Device:
        """Find a device by id or name; raises AttrError(ENODEV)."""
        for dev in self.devices:
            if ref in (dev.id, dev.name):
                return dev
        raise AttrError(errno.ENODEV, f"no device {ref!r}")

    def channel(self, dev: _Device, ref: str, output: bool) -> _Channel:
        for ch in dev.channels:
            if ch.output == output and ref in (ch.id, ch.name):
                return ch
        raise AttrError(errno.ENOENT, f"{dev.name}: no {'output' if output else 'input'} channel {ref!r}")

    def names(self, dev: _Device, section) -> list[str]:
        """Attribute names of a section in XML order."""
        if section in ("dev", "debug", "buffer"):
            return list({"dev": dev.attrs, "debug": dev.debug, "buffer": dev.buffer}[section])
        return list(self.channel(dev, section[1], section[0] == "out").attrs)

    # --- read/write -------------------------------------------------------------------
    def read(self, dev: _Device, section, name: str) -> str:
        key = (dev.id, section, name)
        if key not in self.values:
            raise AttrError(errno.ENOENT, f"{dev.name}: no attribute {name!r}")
        if section == "debug" and name == "direct_reg_access":
            return f"0x{self.regs[dev.name].get(self._reg_addr[dev.name], 0):X}"
        return self.values[key]

    def write(self, dev: _Device, section, name: str, text: str) -> None:
        """Apply a write as the driver would; raises AttrError on refusal."""
        key = (dev.id, section, name)
        if key not in self.values:
            raise AttrError(errno.ENOENT, f"{dev.name}: no attribute {name!r}")
        handler = self._writers.get((dev.name, section if isinstance(section, str) else section[0], name))
        if handler is not None:
            handler(dev, section, name, text.strip())
        elif self._read_only(dev, section, name):
            raise AttrError(errno.EACCES, f"{dev.name}: {name} is read-only")
        else:
            self.values[key] = text.strip()

    @staticmethod
    def _read_only(dev: _Device, section, name: str) -> bool:
        return (name.endswith("_available") or section == "buffer" or dev.name == "xadc"
                or name in ("rssi", "input", "rx_path_rates", "tx_path_rates"))

    def _writer_table(self):
        return {
            ("ad9361-phy", "out", "frequency"): self._w_lo,
            ("ad9361-phy", "in", "sampling_frequency"): self._w_rate,
            ("ad9361-phy", "out", "sampling_frequency"): self._w_rate,
            ("ad9361-phy", "in", "rf_bandwidth"): self._w_bw,
            ("ad9361-phy", "out", "rf_bandwidth"): self._w_bw,
            ("ad9361-phy", "in", "hardwaregain"): self._w_rx_gain,
            ("ad9361-phy", "out", "hardwaregain"): self._w_tx_gain,
            ("ad9361-phy", "in", "gain_control_mode"): self._w_choice,
            ("ad9361-phy", "in", "rf_port_select"): self._w_choice,
            ("ad9361-phy", "out", "rf_port_select"): self._w_choice,
            ("ad9361-phy", "dev", "ensm_mode"): self._w_choice,
            ("ad9361-phy", "dev", "calib_mode"): self._w_choice,
            ("ad9361-phy", "in", "voltage_filter_fir_en"): self._w_fir_en,
            ("ad9361-phy", "in", "filter_fir_en"): self._w_fir_en,
            ("ad9361-phy", "out", "filter_fir_en"): self._w_fir_en,
            ("ad9361-phy", "dev", "filter_fir_config"): self._w_fir_config,
            ("ad9361-phy", "debug", "loopback"): self._w_loopback,
            ("ad9361-phy", "dev", "xo_correction"): self._w_xo,
            ("ad9361-phy", "debug", "direct_reg_access"): self._w_reg,
            ("cf-ad9361-lpc", "debug", "direct_reg_access"): self._w_reg,
            ("cf-ad9361-dds-core-lpc", "debug", "direct_reg_access"): self._w_reg,
            ("cf-ad9361-dds-core-lpc", "out", "raw"): self._w_dds_raw,
            ("cf-ad9361-dds-core-lpc", "out", "frequency"): self._w_dds_frequency,
            ("cf-ad9361-dds-core-lpc", "out", "scale"): self._w_dds_scale,
            ("cf-ad9361-dds-core-lpc", "out", "phase"): self._w_dds_phase,
            ("cf-ad9361-dds-core-lpc", "out", "sampling_frequency"): self._w_readonly_rate,
            ("cf-ad9361-lpc", "in", "sampling_frequency"): self._w_readonly_rate,
        }

    def _w_lo(self, dev, section, name, text):
        hz = _int_in(text, *LO_RANGE_HZ, what=f"{section[1]} frequency")
        self.values[(dev.id, section, name)] = str(hz)
        if section[1] == "altvoltage0":
            self._refresh_gain_range()

    def _w_rate(self, dev, section, name, text):
        lo = RATE_MIN_HZ // self.fir_dec if self.fir_enabled else RATE_MIN_HZ
        self._set_rate(_int_in(text, lo, RATE_MAX_HZ, what="sampling_frequency"))

    def _w_readonly_rate(self, dev, section, name, text):
        if _int_in(text, 0, RATE_MAX_HZ, what=name) != self.sample_rate_hz:
            raise AttrError(errno.EINVAL, f"{dev.name}: sampling_frequency follows ad9361-phy")

    def _w_bw(self, dev, section, name, text):
        self.values[(dev.id, section, name)] = str(_int_in(text, *BW_RANGE_HZ, what="rf_bandwidth"))

    def _w_rx_gain(self, dev, section, name, text):
        if self.values[(dev.id, ("in", "voltage0"), "gain_control_mode")] != "manual":
            raise AttrError(errno.EPERM, "hardwaregain: RX gain is set by the AGC; set gain_control_mode to manual")
        lo, hi = self.rx_gain_range_db
        try:
            gain = float(text.split()[0])
        except (ValueError, IndexError):
            raise AttrError(errno.EINVAL, f"hardwaregain: not a number: {text!r}") from None
        if not lo <= gain <= hi:
            raise AttrError(errno.EINVAL, f"hardwaregain={gain} outside [{lo}, {hi}] dB")
        self.values[(dev.id, section, name)] = f"{int(gain):.6f} dB"

    def _w_tx_gain(self, dev, section, name, text):
        try:
            gain = float(text.split()[0])
        except (ValueError, IndexError):
            raise AttrError(errno.EINVAL, f"hardwaregain: not a number: {text!r}") from None
        atten_mdb = round(-gain * 1000)
        if gain > 0 or atten_mdb > TX_ATTEN_MAX_MDB:
            raise AttrError(errno.EINVAL, f"hardwaregain={gain} outside [-89.75, 0] dB")
        self.values[(dev.id, section, name)] = f"{-(atten_mdb // 250) * 0.25:.6f} dB"

    def _w_choice(self, dev, section, name, text):
        choices = self.values[(dev.id, section, name + "_available")].split()
        if text not in choices:
            raise AttrError(errno.EINVAL, f"{name}={text!r} not one of {choices}")
        self.values[(dev.id, section, name)] = text

    def _w_fir_en(self, dev, section, name, text):
        on = _int_in(text, 0, 1, what=name)
        if on and self.sample_rate_hz * self.fir_dec > FIR_MAX_INPUT_HZ:
            raise AttrError(errno.EINVAL, f"{name}: FIR decimation {self.fir_dec} too high for "
                                          f"{self.sample_rate_hz} S/s")
        if not on and self.sample_rate_hz < RATE_MIN_HZ:
            raise AttrError(errno.EINVAL, f"{name}: {self.sample_rate_hz} S/s needs the FIR; raise the rate first")
        for key in ((dev.id, ("in", "out"), "voltage_filter_fir_en"), (dev.id, ("in", "voltage0"), "filter_fir_en"),
                    (dev.id, ("out", "voltage0"), "filter_fir_en")):
            self.values[key] = str(on)
        self._set_rate(self.sample_rate_hz)

    def _w_fir_config(self, dev, section, name, text):
        self.fir_dec = _parse_fir(text)
        self.fir_taps = sum(1 for ln in text.splitlines() if "," in ln)

    def _w_loopback(self, dev, section, name, text):
        self.values[(dev.id, section, name)] = str(_int_in(text, 0, 2, what="loopback"))

    def _w_dds_raw(self, dev, section, name, text):
        """One enable for the whole DDS: every tone's raw reads the value written."""
        on = str(_int_in(text, 0, 1, what="raw"))
        for ch in dev.channels:
            if "raw" in ch.attrs:
                self.values[(dev.id, ("out", ch.id), "raw")] = on

    def _w_dds_frequency(self, dev, section, name, text):
        self.values[(dev.id, section, name)] = str(_int_in(text, 0, RATE_MAX_HZ // 2, what="frequency"))

    def _w_dds_scale(self, dev, section, name, text):
        try:
            scale = float(text)
        except ValueError:
            raise AttrError(errno.EINVAL, f"scale: not a number: {text!r}") from None
        if not 0.0 <= scale <= 1.0:
            raise AttrError(errno.EINVAL, f"scale={scale} outside [0, 1]")
        self.values[(dev.id, section, name)] = f"{scale:.6f}"

    def _w_dds_phase(self, dev, section, name, text):
        self.values[(dev.id, section, name)] = str(_int_in(text, 0, 360_000, what="phase"))

    def _w_xo(self, dev, section, name, text):
        self.values[(dev.id, section, name)] = str(_int_in(text, *XO_RANGE_HZ, what="xo_correction"))

    def _w_reg(self, dev, section, name, text):
        """debugfs direct_reg_access: 'addr' selects the register the next read returns, 'addr value'
        writes it (the status register clears the bits written)."""
        try:
            words = [int(w, 0) for w in text.split()]
        except ValueError:
            raise AttrError(errno.EINVAL, f"direct_reg_access: not 'addr [value]': {text!r}") from None
        lo, hi = _REG_RANGES[dev.name]
        if len(words) not in (1, 2) or not lo <= words[0] <= hi or (len(words) == 2 and not 0 <= words[1] < 1 << 32):
            raise AttrError(errno.EINVAL, f"direct_reg_access: {text!r} not a register of {dev.name}")
        regs = self.regs[dev.name]
        self._reg_addr[dev.name] = words[0]
        if len(words) == 2 and words[0] == STATUS_REG and dev.name != "ad9361-phy":
            regs[STATUS_REG] = regs.get(STATUS_REG, 0) & ~words[1]
        elif len(words) == 2:
            regs[words[0]] = words[1]

    def flag_status(self, dev_name: str, bit: int) -> None:
        """Latch a status bit of a streaming core (overflow, underflow)."""
        self.regs[dev_name][STATUS_REG] = self.regs[dev_name].get(STATUS_REG, 0) | bit

    # --- derived values ---------------------------------------------------------------
    def _set_rate(self, hz: int) -> None:
        for key in (("iio:device0", ("in", "voltage0"), "sampling_frequency"),
                    ("iio:device0", ("out", "voltage0"), "sampling_frequency")):
            self.values[key] = str(hz)
        for dev in self.devices[2:]:
            for ch in dev.channels:
                self.values[(dev.id, ("out" if ch.output else "in", ch.id), "sampling_frequency")] = str(hz)
        tf = hz * (self.fir_dec if self.fir_enabled else 1)
        self.values[("iio:device0", "dev", "tx_path_rates")] = (
            f"BBPLL:{tf * 64} DAC:{tf * 8} T2:{tf * 4} T1:{tf * 2} TF:{tf} TXSAMP:{hz}")
        self.values[("iio:device0", "dev", "rx_path_rates")] = (
            f"BBPLL:{tf * 64} ADC:{tf * 16} R2:{tf * 4} R1:{tf * 2} RF:{tf} RXSAMP:{hz}")
        fir = f"FIR Rx: {self.fir_taps},{self.fir_dec} Tx: {self.fir_taps},{self.fir_dec}"
        self.values[("iio:device0", "dev", "filter_fir_config")] = fir

    def _refresh_gain_range(self) -> None:
        lo, hi = self.rx_gain_range_db
        key = ("iio:device0", ("in", "voltage0"), "hardwaregain")
        self.values[("iio:device0", ("in", "voltage0"), "hardwaregain_available")] = f"[{lo} 1 {hi}]"
        gain = float(self.values[key].split()[0])
        self.values[key] = f"{min(max(gain, lo), hi):.6f} dB"

    @property
    def xo_correction_hz(self) -> int:
        return int(self.values[("iio:device0", "dev", "xo_correction")])

    @property
    def dds_enabled(self) -> bool:
        return self.values[("iio:device2", ("out", "altvoltage0"), "raw")] == "1"

    def dds_tones(self) -> list[tuple[str, float, float, float]]:
        """The DDS tones as (I or Q, frequency Hz, scale, phase in degrees); each tone is
        scale·sin(2π·f·t + phase) on its rail, so the stock I 90° / Q 0° pair is a tone at +f."""
        out = []
        for i in range(4):
            ch = self.devices[2].channels[2 + i]
            key = ("iio:device2", ("out", ch.id))
            out.append((ch.name.split("_")[1], float(self.values[key + ("frequency",)]),
                        float(self.values[key + ("scale",)]), float(self.values[key + ("phase",)]) / 1000))
        return out

    @property
    def fir_enabled(self) -> bool:
        return self.values[("iio:device0", ("in", "out"), "voltage_filter_fir_en")] == "1"

    @property
    def digital_loopback(self) -> bool:
        return self.values[("iio:device0", "debug", "loopback")] == "1"

    @property
    def rx_gain_range_db(self) -> tuple[int, int]:
        """RX gain table range at the current RX LO (ad9361 full tables)."""
        return (-1, 73) if self.rx_lo_hz < 1_300_000_000 else (-3, 71)

    @property
    def rx_lo_hz(self) -> int:
        return int(self.values[("iio:device0", ("out", "altvoltage0"), "frequency")])

    @property
    def tx_lo_hz(self) -> int:
        return int(self.values[("iio:device0", ("out", "altvoltage1"), "frequency")])

    @property
    def sample_rate_hz(self) -> int:
        return int(self.values[("iio:device0", ("in", "voltage0"), "sampling_frequency")])

    @property
    def rx_gain_db(self) -> float:
        return float(self.values[("iio:device0", ("in", "voltage0"), "hardwaregain")].split()[0])

    @property
    def tx_gain_db(self) -> float:
        return float(self.values[("iio:device0", ("out", "voltage0"), "hardwaregain")].split()[0])

    # --- context XML ------------------------------------------------------------------
    def xml(self, description: str) -> str:
        """The context description libiio's network backend parses (PRINT)."""
        major, minor, git = LIBIIO_VERSION
        out = ['<?xml version="1.0" encoding="utf-8"?>', _DTD,
               f'<context name="network" version-major="{major}" version-minor="{minor}" '
               f'version-git="{git}" description={quoteattr(description)} >']
        for k, v in (("hw_model", "Analog Devices PlutoSDR Rev.B (Z7010-AD9363A)"),
                     ("hw_model_variant", "0"), ("hw_serial", "emulated"), ("fw_version", "v0.38"),
                     ("ad9361-phy,model", "ad9363a"), ("ad9361-phy,xo_correction", "40000000")):
            out.append(f'<context-attribute name="{k}" value={quoteattr(v)} />')
        for dev in self.devices:
            out.append(f'<device id="{dev.id}" name="{dev.name}" >')
            for ch in dev.channels:
                name = f' name="{ch.name}"' if ch.name else ""
                out.append(f'<channel id="{ch.id}"{name} type="{"output" if ch.output else "input"}" >')
                if ch.scan_index is not None:
                    out.append(f'<scan-element index="{ch.scan_index}" format={quoteattr(ch.fmt)} />')
                prefix = f'{"out" if ch.output else "in"}_{ch.id}' + (f"_{ch.name}" if ch.name else "")
                shared = f'{"out" if ch.output else "in"}_{ch.id.rstrip("0123456789")}'
                for a in ch.attrs:
                    out.append(f'<attribute name="{a}" filename="{shared if a in ch.shared else prefix}_{a}" />')
                out.append("</channel>")
            out += [f'<attribute name="{a}" />' for a in dev.attrs]
            out += [f'<buffer-attribute name="{a}" />' for a in dev.buffer]
            out += [f'<debug-attribute name="{a}" />' for a in dev.debug]
            out.append("</device>")
        out.append("</context>")
        return "".join(out)
