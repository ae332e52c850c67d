"""The GNU Radio bridge flowgraphs a config's radios need, and ``python -m testbed.bridge CONFIG``.

Radios without ``device_args`` share one ``emulate`` flowgraph (GNU Radio's channel blocks in
place of radios); each radio with ``device_args`` gets a ``uhd`` flowgraph of its own. Ports
come from the entries' ``control_address``, ``tx_address`` and ``rx_address`` (none or 0: a
free port); addresses beyond loopback need the bridge's CURVE keys (``--curve-server-secret``,
``--curve-clients``). ``start_flowgraphs`` starts them for a run (``hardware.start_bridge``)
and hands back the config whose radio entries name their endpoints.

(The command line was ``python -m hardware.gnuradio_bridge.process CONFIG`` before; it moved
here because it reads a testbed config.)
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import replace

from hardware.dsp import PilotPlan
from hardware.emulated.bridge import emulator_flowgraph
from hardware.gnuradio_bridge.process import FlowgraphProcess, uhd_flowgraph
from testbed.config import Config, load_config

__all__ = ["flowgraphs_for", "start_flowgraphs", "main"]


def flowgraphs_for(config: Config, plan: PilotPlan | None = None, **overrides) -> list[FlowgraphProcess]:
    """The flowgraphs (not started) that the gnuradio radios of a config talk to."""
    hw, params = config.hardware, config.network
    radios = [e for e in hw.radios if e.driver == "gnuradio"]
    if not radios:
        raise ValueError("hardware.radios: no radio uses the gnuradio driver")
    emulated = [e for e in radios if not e.device_args]
    if emulated and len(emulated) != len(radios):
        raise ValueError("hardware.radios: either every gnuradio radio has device_args (USRPs) or none "
                         "(one emulator); got a mix")
    if emulated:
        plan = plan or hw.pilot_plan(params.num_bs, params.num_bands)
        return [emulator_flowgraph(hw, params, plan, seed=config.env.seed + 1, **overrides)]
    return [uhd_flowgraph(hw, e, **overrides) for e in radios]


def start_flowgraphs(config: Config, plan: PilotPlan | None = None) -> tuple[list[FlowgraphProcess], Config]:
    """Start the flowgraphs of a config's gnuradio radios on free 127.0.0.1 ports (plain ZMQ: the
    entries' CURVE keys are dropped): returns them, running, and the config whose gnuradio radio
    entries name their endpoints (and whose start_bridge is false: its flowgraphs run). If one
    fails to start, those already started are stopped."""
    hw = config.hardware
    free = tuple(replace(e, control_address="", tx_address="", rx_address="", server_key="", client_key="")
                 if e.driver == "gnuradio" else e for e in hw.radios)
    flowgraphs = flowgraphs_for(replace(config, hardware=replace(hw, radios=free)), plan)
    try:
        for fg in flowgraphs:
            fg.start()
    except BaseException:
        for fg in flowgraphs:
            fg.stop()
        raise
    endpoints = {node: fg.endpoints(node) for fg in flowgraphs for node in {*fg.tx, *fg.rx}}
    radios = tuple(replace(e, **endpoints[e.name]) if e.driver == "gnuradio" else e for e in hw.radios)
    return flowgraphs, replace(config, hardware=replace(hw, radios=radios, start_bridge=False))


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.bridge CONFIG``: run the config's flowgraphs until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m testbed.bridge", description=main.__doc__)
    parser.add_argument("config", help="YAML path or preset with backend gnuradio")
    parser.add_argument("--curve-server-secret", default=None,
                        help="the bridge's CURVE secret key file (server.key_secret of `testbed keys generate`); "
                             "required when the entries' addresses are beyond loopback")
    parser.add_argument("--curve-clients", default=None, help="directory of the client public keys let in (*.key)")
    args = parser.parse_args(argv)
    try:
        flowgraphs = flowgraphs_for(load_config(args.config), curve_server_secret=args.curve_server_secret,
                                    curve_clients=args.curve_clients)
    except ValueError as err:
        parser.error(str(err))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for fg in flowgraphs:
            fg.start()
            print(f"{fg.mode} flowgraph running: {json.dumps(fg.ready)}", flush=True)
        while not stop.wait(0.5) and all(fg.running for fg in flowgraphs):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        codes = [fg.stop() for fg in flowgraphs]
    return 0 if stop.is_set() or all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
