"""End to end with nothing of ours on the device side: the openssl command line and an HTTP client.

The first test runs the shell blocks of docs/api.md's walkthrough, byte for byte, against a real hub --
so the documentation is what is tested -- told only where the hub and its token file are, as its reader
would be. The second does the same steps with ``subprocess`` openssl and
``http.client`` only, for machines without curl.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import serve_hub

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")
DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def doc_blocks(marker: str, doc: Path = DOC) -> str:
    """The ```sh blocks between <!-- e2e:marker --> and <!-- /e2e:marker --> in ``doc`` (docs/api.md)."""
    text = doc.read_text()
    section = text.split(f"<!-- e2e:{marker} -->", 1)[1].split(f"<!-- /e2e:{marker} -->", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert blocks, f"no sh blocks under e2e:{marker}"
    return "\n".join(blocks)


def run_shell(script: str, cwd: Path, hub, **env: str) -> str:
    """Run ``script`` as the walkthrough's reader would: told where the hub and its token file are."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HUB": hub.url,
            "ADMIN_TOKEN_FILE": hub.admin_token_path,
            "HOME": str(cwd),
            "LC_ALL": "C",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "hub", clean_log=False)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the documented walkthrough uses curl")
def test_the_documented_walkthrough_works_as_written(hub, tmp_path):
    script = doc_blocks("walkthrough")
    assert hub.admin_token() not in script
    out = run_shell(script, tmp_path, hub)
    ca = json.loads((tmp_path / "ca.json").read_text())
    admitted = json.loads((tmp_path / "admitted.json").read_text())
    assert admitted == {"device_id": "dev-1", "ca": ca["id"], "first_connection": True}
    assert '"status": "verified"' in out
    assert '"error": "device_disabled"' in out
    assert json.loads((tmp_path / "refused.json").read_text())["error"] == "cert_revoked"
    # Without the token the management call was refused; with it, each change is in the audit log.
    assert (
        "401" in out.splitlines()
        and json.loads((tmp_path / "anonymous.json").read_text())["error"] == "admin_token_missing"
    )
    audit = json.loads((tmp_path / "audit.json").read_text())["entries"]
    fp = ca["id"]
    changes = [(e["action"], e["target"]) for e in audit if fp in e["fingerprints"] or e["target"] == "dev-1"]
    revoked = [e["target"] for e in audit if e["action"] == "revocation.add"]
    assert changes == [
        ("ca.register", fp),
        ("ca.verify", fp),
        ("device.disable", "dev-1"),
        ("device.enable", "dev-1"),
    ], changes
    assert len(revoked) == 1
    # Every other signature scheme, continuing in the same directory.
    run_shell(doc_blocks("algorithms"), tmp_path, hub)
    for alg in ("p384", "ed25519", "rsa"):
        doc = json.loads((tmp_path / f"admitted-{alg}.json").read_text())
        assert doc == {"device_id": f"dev-{alg}", "ca": ca["id"], "first_connection": True}


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def post(url: str, path: str, body: bytes, content_type: str, token: str | None = None) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type, **auth})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_openssl_and_a_plain_http_client(hub, tmp_path):
    d = tmp_path
    token = hub.admin_token()
    p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        "req",
        "-x509",
        "-new",
        *p256,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Company-Plain",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    status, ca = post(hub.url, "/cas", (d / "ca.pem").read_bytes(), "application/x-pem-file", token)
    assert status == 201, ca

    openssl(
        "req",
        "-new",
        *p256,
        "-keyout",
        "verification.key",
        "-out",
        "verification.csr",
        "-subj",
        "/CN=" + ca["verification_code"],
        cwd=d,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "verification.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-sha256",
        "-out",
        "verification.pem",
        cwd=d,
    )
    status, doc = post(
        hub.url, f"/cas/{ca['id']}/verify", (d / "verification.pem").read_bytes(), "application/x-pem-file", token
    )
    assert (status, doc["status"]) == (200, "verified"), doc

    # Without -extfile, OpenSSL 3.0's `x509 -req` writes a v1 certificate: the hub says so.
    openssl("req", "-new", *p256, "-keyout", "device.key", "-out", "device.csr", "-subj", "/CN=plain-1", cwd=d)
    openssl(
        "x509",
        "-req",
        "-in",
        "device.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-out",
        "device-v1.pem",
        cwd=d,
    )
    status, doc = post(hub.url, "/devices/challenge", (d / "device-v1.pem").read_bytes(), "application/x-pem-file")
    assert (status, doc["error"]) == (401, "chain_untrusted") and "X509v3" in doc["message"], doc

    (d / "device.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "device.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "device.ext",
        "-out",
        "device.pem",
        cwd=d,
    )
    status, issued = post(hub.url, "/devices/challenge", (d / "device.pem").read_bytes(), "application/x-pem-file")
    assert status == 200 and issued["device_id"] == "plain-1", issued
    (d / "challenge.bin").write_bytes(base64.b64decode(issued["challenge"]))
    signature = openssl("dgst", "-sha256", "-sign", "device.key", "challenge.bin", cwd=d)
    proof = json.dumps({"challenge": issued["challenge"], "signature": base64.b64encode(signature).decode()})
    status, admitted = post(hub.url, "/devices/proof", proof.encode(), "application/json")
    assert (status, admitted) == (200, {"device_id": "plain-1", "ca": ca["id"], "first_connection": True})
    status, again = post(hub.url, "/devices/proof", proof.encode(), "application/json")
    assert (status, again["error"]) == (401, "challenge_used")

    # CA proof of possession by raw signature over the code (the JSON form), for a second CA.
    openssl(
        "req",
        "-x509",
        "-new",
        *p256,
        "-keyout",
        "ca2.key",
        "-out",
        "ca2.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Company-Signed",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    status, ca2 = post(hub.url, "/cas", (d / "ca2.pem").read_bytes(), "application/x-pem-file", token)
    assert status == 201
    code_signature = openssl("dgst", "-sha256", "-sign", "ca2.key", cwd=d, stdin=ca2["verification_code"].encode())
    status, doc = post(
        hub.url,
        f"/cas/{ca2['id']}/verify",
        json.dumps({"signature": base64.b64encode(code_signature).decode()}).encode(),
        "application/json",
        token,
    )
    assert (status, doc["status"]) == (200, "verified"), doc
