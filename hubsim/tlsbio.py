"""pyOpenSSL over memory BIOs, as both ends use it (the hub's listener in its event loop, the swarm's
clients on gevent sockets): the bytes OpenSSL has ready to send."""

from __future__ import annotations

from OpenSSL import SSL


def outgoing(tls: SSL.Connection) -> bytes:
    """Everything the connection has written to its outgoing memory BIO, drained."""
    out = []
    while True:
        try:
            chunk = tls.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


__all__ = ["outgoing"]
