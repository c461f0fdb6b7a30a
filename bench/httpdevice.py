"""A minimal device over plain HTTP (http.client, keep-alive): what the HTTP benchmark and the run
orchestrator use to register and prove a CA and to authenticate a device without Locust."""

from __future__ import annotations

import base64
import http.client
import json

from cryptography.hazmat.primitives.serialization import Encoding


class HubError(RuntimeError):
    def __init__(self, status: int, body: bytes):
        try:
            self.code = json.loads(body).get("error", "?")
        except ValueError:
            self.code = "?"
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes, content_type: str) -> dict:
    conn.request(method, path, body=body, headers={"Content-Type": content_type})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status >= 300:
        raise HubError(reply.status, data)
    return json.loads(data)


def register_and_prove(conn: http.client.HTTPConnection, company) -> str:
    """POST /cas, then POST /cas/{id}/verify with a certificate whose CN is the code; returns the CA id.
    ``company`` is the CA holder (a :class:`loadgen._pki.Custodian`): it alone signs."""
    pem = company.certificate.public_bytes(Encoding.PEM)
    try:
        created = _call(conn, "POST", "/cas", pem, "application/x-pem-file")
    except HubError as exc:
        if exc.code != "ca_exists":
            raise
        return _existing(conn, company)
    proof = company.verification_certificate(created["verification_code"]).public_bytes(Encoding.PEM)
    _call(conn, "POST", f"/cas/{created['id']}/verify", proof, "application/x-pem-file")
    return created["id"]


def _existing(conn, company) -> str:
    from cryptography.hazmat.primitives import hashes
    ca_id = company.certificate.fingerprint(hashes.SHA256()).hex()
    conn.request("GET", f"/cas/{ca_id}")
    reply = conn.getresponse()
    record = json.loads(reply.read())
    if record.get("status") != "verified":
        code = record.get("verification_code")
        proof = company.verification_certificate(code).public_bytes(Encoding.PEM)
        _call(conn, "POST", f"/cas/{ca_id}/verify", proof, "application/x-pem-file")
    return ca_id


def authenticate(conn: http.client.HTTPConnection, identity) -> dict:
    """Challenge with the device's PEM chain, sign with its own key, prove."""
    issued = _call(conn, "POST", "/devices/challenge", identity.chain_pem(), "application/x-pem-file")
    challenge = base64.b64decode(issued["challenge"])
    proof = json.dumps({"challenge": issued["challenge"],
                        "signature": base64.b64encode(identity.sign(challenge)).decode()}).encode()
    return _call(conn, "POST", "/devices/proof", proof, "application/json")
