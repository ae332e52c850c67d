"""The `testbed` command."""
from __future__ import annotations

import argparse
import importlib.metadata
import sys

from testbed import calibrate, commands, keys, radio_check, replay, sweep
from testbed.config import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse with whole option names only and one-line errors: 'testbed train: --episodes: -3 is
    out of range; allowed [1, 10000000]', exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="testbed", description=__doc__)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('spectrum-testbed')}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_commands(sub)
    sweep.add_command(sub)
    radio_check.add_command(sub)
    keys.add_command(sub)
    replay.add_command(sub)
    calibrate.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
