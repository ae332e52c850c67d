"""`testbed keys generate DIR` (or ``python -m testbed.keys generate DIR``): the CURVE keys of a
GNU Radio bridge on another host.

DIR gets a server and a client keypair (``zmq.auth.create_certificates``; secret files mode 0600):

- radio host (the flowgraph): ``server.key_secret`` (``--curve-server-secret``) and ``clients/``
  holding ``client.key`` (``--curve-clients``: the client keys let in);
- agent host (the testbed): ``server.key`` (the radio entry's ``server_key``) and
  ``client.key_secret`` (its ``client_key``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import zmq.auth

__all__ = ["add_command", "generate", "main"]

FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret", "clients")


def generate(directory: str | Path) -> dict[str, Path]:
    """Write both keypairs into directory (made if missing; existing keys are never overwritten).
    Returns the paths: server_public, server_secret, client_public, client_secret, clients."""
    root = Path(directory)
    taken = [name for name in FILES if (root / name).exists()]
    if taken:
        raise FileExistsError(f"{root} already holds {taken}; remove them or pick another directory")
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for who in ("server", "client"):
        public, secret = map(Path, zmq.auth.create_certificates(root, who))
        secret.chmod(0o600)
        paths[f"{who}_public"], paths[f"{who}_secret"] = public, secret
    paths["clients"] = root / "clients"
    paths["clients"].mkdir()
    shutil.copy(paths["client_public"], paths["clients"])
    return paths


def _cmd_generate(args) -> int:
    try:
        paths = generate(args.dir)
    except OSError as err:
        print(f"keys: error: {err}", file=sys.stderr)
        return 2
    print(f"radio host: --curve-server-secret {paths['server_secret']} --curve-clients {paths['clients']}")
    print(f"agent host: server_key: {paths['server_public']}  client_key: {paths['client_secret']}")
    return 0


def add_command(subparsers) -> None:
    """Add ``keys generate DIR`` to the ``testbed`` command's subparsers."""
    keys = subparsers.add_parser("keys", help="CURVE keys of a GNU Radio bridge on another host")
    _add_generate(keys.add_subparsers(dest="keys_command", required=True))


def _add_generate(subparsers) -> None:
    gen = subparsers.add_parser("generate", help="write a server and a client keypair into DIR")
    gen.add_argument("dir", help="directory for the keys (made if missing; existing keys are kept)")
    gen.set_defaults(func=_cmd_generate)


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.keys generate DIR``."""
    parser = argparse.ArgumentParser(prog="python -m testbed.keys", description=__doc__.split("\n\n")[0])
    _add_generate(parser.add_subparsers(dest="keys_command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
