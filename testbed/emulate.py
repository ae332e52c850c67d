"""``python -m testbed.emulate CONFIG``: serve an emulated Pluto for every radio of a bench config.

All emulators share one RF medium set as the mock bench's (``hardware.emulated.scene``): N0 in
every band, each UE radio hearing the BS radios with its ``link_gain_db``. Prints one URI a
line; ``--write-config PATH`` writes the config with every radio's uri pointing at its
emulator, ready for ``testbed radio check --config PATH``.

(This was ``python -m hardware.iiod_emulator --bench CONFIG`` before; it moved here because it
reads a testbed config. ``python -m hardware.emulated.iiod`` serves emulators without a config.)
"""
from __future__ import annotations

import argparse
import dataclasses

from hardware.emulated.iiod import serve_bench, serve_until_signal
from testbed.config import load_config, save_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.emulate", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="YAML path or preset whose radio map to emulate (e.g. configs/bench_pluto.yaml)")
    ap.add_argument("--write-config", metavar="PATH", help="write the config with the emulators' URIs here")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--realtime", action="store_true", help="pace RX buffers to the sample rate")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = ap.parse_args(argv)
    config = load_config(args.config)
    emulators, hw = serve_bench(config.hardware, config.network, args.host, args.realtime, args.seed)
    if args.write_config:
        save_config(dataclasses.replace(config, hardware=hw), args.write_config)
    serve_until_signal(emulators)


if __name__ == "__main__":
    main()
