"""Shared pytest options and fixtures.

``--pluto-uri`` (e.g. ip:192.168.2.1) and ``--usrp-args`` (UHD device arguments) turn on the
tests marked ``pluto_device`` / ``usrp_device``, which need a real radio; ``--pluto-ue-uri`` and
``--usrp-ue-args`` (a second radio cabled from the first, or the same one with its TX cabled into
its RX) turn on those also marked ``pluto_pair`` / ``usrp_pair``. Without their options those
tests are deselected (not faked, not skipped).
"""
from __future__ import annotations

import pytest

_DEVICE_MARKERS = {"pluto_device": "--pluto-uri", "usrp_device": "--usrp-args",
                   "pluto_pair": "--pluto-ue-uri", "usrp_pair": "--usrp-ue-args"}


def pytest_addoption(parser):
    parser.addoption("--pluto-uri", default=None, help="libiio URI of a real ADALM-Pluto (ip:... or usb:...)")
    parser.addoption("--usrp-args", default=None, help="UHD device arguments of a real USRP, e.g. type=b200")
    parser.addoption("--pluto-ue-uri", default=None,
                     help="libiio URI of the Pluto whose RX is cabled from --pluto-uri's TX through an attenuator "
                          "(the same URI: one Pluto cabled into itself)")
    parser.addoption("--usrp-ue-args", default=None,
                     help="UHD device arguments of the USRP whose RX2 is cabled from --usrp-args's TX/RX through an "
                          "attenuator (the same arguments: one USRP cabled into itself)")


def pytest_configure(config):
    for marker, option in _DEVICE_MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: needs a real radio; runs only with {option}")


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        missing = [m for m, opt in _DEVICE_MARKERS.items()
                   if item.get_closest_marker(m) and not config.getoption(opt.lstrip("-").replace("-", "_"))]
        (drop if missing else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def pluto_emulator():
    """An emulated Pluto on a free 127.0.0.1 port, on its own RF medium (2 MS/s, noise 1e-10)."""
    from hardware.emulated.iiod import IIODEmulator

    with IIODEmulator() as emu:
        yield emu
