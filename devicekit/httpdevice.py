"""A minimal device over plain HTTP (http.client, keep-alive): what the HTTP benchmarks, the reliability
tests and the run orchestrator use to authenticate a device without Locust. CA registration is the
swarm's own :meth:`devicekit.hubclient.HubClient.ensure_ca`."""

from __future__ import annotations

import base64
import http.client
import json
from concurrent.futures import ThreadPoolExecutor

from devicekit.hubclient import HubClient, HubError

__all__ = ["HubError", "authenticate", "authenticate_all", "register_and_prove"]


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes, content_type: str) -> dict:
    conn.request(method, path, body=body, headers={"Content-Type": content_type})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status >= 300:
        raise HubError(f"{method} {path}", reply.status, data)
    return json.loads(data)


def register_and_prove(hub, company) -> str:
    """Register ``company``'s CA with ``hub`` (a :class:`~certstorm.processes.hub.HubProcess`) and prove
    possession (the CA holder alone signs), as its operator; returns the CA id. Uses connections of its
    own: management calls would move a device connection off the hub's fast path."""
    return HubClient(hub.url, token=hub.admin_token()).ensure_ca(company)["id"]


def authenticate(conn: http.client.HTTPConnection, identity) -> dict:
    """Challenge with the device's PEM chain, sign with its own key, prove."""
    issued = _call(conn, "POST", "/devices/challenge", identity.chain_pem(), "application/x-pem-file")
    challenge = base64.b64decode(issued["challenge"])
    proof = json.dumps(
        {"challenge": issued["challenge"], "signature": base64.b64encode(identity.sign(challenge)).decode()}
    ).encode()
    return _call(conn, "POST", "/devices/proof", proof, "application/json")


def authenticate_all(host: str, port: int, identities, connections: int = 4) -> None:
    """Authenticate ``identities`` over ``connections`` concurrent keep-alive connections (enough to keep
    one hub worker busy between requests), a plain http.client each."""
    slices = [identities[i::connections] for i in range(connections)]

    def run(part):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            for ident in part:
                authenticate(conn, ident)
        finally:
            conn.close()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(run, slices))
