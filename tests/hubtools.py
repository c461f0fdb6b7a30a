"""Requests the tests make of a running hub beyond what :class:`certstorm.processes.HubProcess` offers."""

from __future__ import annotations

import http.client
import json


def request_then_worker(host: str, port: int, path: str, body: bytes, headers: dict) -> tuple[int, bytes, int]:
    """A device request as the first request of a new connection (so the device fast path answers it),
    then /healthz on the same connection to learn which worker that was: (status, body, worker pid)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        status, data = reply.status, reply.read()
        conn.request("GET", "/healthz")
        pid = json.loads(conn.getresponse().read())["pid"]
        return status, data, pid
    finally:
        conn.close()
