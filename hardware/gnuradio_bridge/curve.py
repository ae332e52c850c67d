"""The client side's CURVE keys for the GNU Radio bridge, and the rule that plain ZMQ stays on loopback.

A radio entry names two key files made by ``testbed keys generate DIR``: ``server_key`` (the
bridge's public key, ``server.key``) and ``client_key`` (this side's secret key,
``client.key_secret``). With them every socket to the bridge authenticates both ends and
encrypts (ZMQ CURVE); without them every address must be loopback.
"""
from __future__ import annotations

from dataclasses import dataclass

import zmq
import zmq.auth

from hardware.radio import RadioError

__all__ = ["ClientKeys"]


@dataclass(frozen=True)
class ClientKeys:
    """This side's CURVE keypair and the bridge's public key (Z85 text, 40 bytes each)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str, client_key: str) -> "ClientKeys | None":
        """The keys in two key files; None when both paths are empty. RadioError names the field."""
        if not server_key and not client_key:
            return None
        if not (server_key and client_key):
            raise RadioError("server_key and client_key go together: give both CURVE key files or neither")
        server_public, _ = cls._read("server_key", server_key)
        public, secret = cls._read("client_key", client_key)
        if secret is None:
            raise RadioError(f"client_key {client_key} holds no secret key; give client.key_secret, not client.key")
        return cls(server_public, public, secret)

    @staticmethod
    def _read(field: str, path: str) -> tuple[bytes, bytes | None]:
        try:
            return zmq.auth.load_certificate(path)
        except (OSError, ValueError) as err:
            raise RadioError(f"{field}: cannot read the CURVE key file {path} ({err})") from None

    def apply(self, sock: zmq.Socket) -> None:
        """Make sock a CURVE client of the bridge (before it binds or connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
