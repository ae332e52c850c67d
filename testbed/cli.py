"""The `testbed` command."""
from __future__ import annotations

import argparse
import sys

from testbed.config import ConfigError, load_config


def _demo(args) -> int:
    from testbed.demo import run_demo

    overrides = {"run": {"out_dir": args.out}} if args.out else {}
    config = load_config(args.config, overrides)
    run_demo(config, args.episodes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the reference policies on a simulated network")
    demo.add_argument("--config", default="paper", help="YAML path or preset name (default: paper)")
    demo.add_argument("--episodes", type=int, default=None, help="episodes per policy (default: run.episodes)")
    demo.add_argument("--out", default=None, help="output folder (default: run.out_dir)")
    demo.set_defaults(func=_demo)

    from testbed import radio_check, runner

    runner.add_commands(sub)
    radio_check.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
