"""Microsoft's Python device SDK (``azure-iot-device``) provisions an openssl-made device through DPS and
connects it to the hub DPS assigned. The SDK pins paho-mqtt < 2, so it lives in a virtual environment of
its own (cached between runs); it always uses port 8883, so DPS and each hub get a loopback address of
their own, and their server certificates name it."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from certstorm.processes import DpsProcess, HubProcess
from devicekit.pki import Custodian

pytestmark = pytest.mark.slow
ADMISSION = ("--admission", "provisioned")  # the hubs admit only what DPS assigned them

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient, X509

    cfg = json.load(open(sys.argv[1]))
    x509 = X509(cert_file=cfg["cert"], key_file=cfg["key"])
    provisioning = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=cfg["dps"], registration_id=cfg["id"], id_scope=cfg["scope"], x509=x509,
        server_verification_cert=open(cfg["dps_ca"]).read(),
    )
    result = provisioning.register()
    state = result.registration_state
    client = IoTHubDeviceClient.create_from_x509_certificate(
        x509=x509, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=open(cfg["hub_cas"][state.assigned_hub]).read(),
    )
    client.connect()
    client.send_message(Message("hello from the SDK"))
    client.shutdown()
    print(json.dumps({"status": result.status, "hub": state.assigned_hub, "device_id": state.device_id,
                      "substatus": state.sub_status}))
    """
)


def sdk_python(cache_dir: Path) -> Path:
    """The SDK's own environment: made once, reused while it imports."""
    python = cache_dir / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import azure.iot.device"], capture_output=True).returncode == 0
    ):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache_dir)], check=True)
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "azure-iot-device>=2.12,<3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        reason = f"pip could not install azure-iot-device (is PyPI reachable?): {done.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def free_loopback_addresses(count: int, port: int = 8883) -> list[str]:
    """Addresses in 127.0.0.0/8 whose ``port`` nobody serves (other test runs may hold some)."""
    found: list[str] = []
    rng = random.Random()
    while len(found) < count:
        address = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 255)}.{rng.randrange(2, 255)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        if address not in found:
            found.append(address)
    return found


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def openssl_device(folder: Path, device_id: str) -> Custodian:
    """Company-X's CA, Factory-Y's intermediate and the device, made with the openssl command line as
    docs/dps.md makes them; returns Company-X as a custodian (to prove its key to DPS and the hubs)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    (folder / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    (folder / "factory.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
    )
    (folder / "device.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    openssl(
        "req",
        "-x509",
        "-new",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Company-X",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )
    openssl("req", "-new", *ec, "-keyout", "factory.key", "-out", "factory.csr", "-subj", "/CN=Factory-Y", cwd=folder)
    openssl(
        "x509",
        "-req",
        "-in",
        "factory.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "factory.ext",
        "-out",
        "factory.pem",
        cwd=folder,
    )
    openssl("req", "-new", *ec, "-keyout", "device.key", "-out", "device.csr", "-subj", f"/CN={device_id}", cwd=folder)
    openssl(
        "x509",
        "-req",
        "-in",
        "device.csr",
        "-CA",
        "factory.pem",
        "-CAkey",
        "factory.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "device.ext",
        "-out",
        "device.pem",
        cwd=folder,
    )
    (folder / "chain.pem").write_bytes((folder / "device.pem").read_bytes() + (folder / "factory.pem").read_bytes())
    key = load_pem_private_key((folder / "ca.key").read_bytes(), None)
    return Custodian.restore("Company-X", key, x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes()))


def test_the_azure_sdk_provisions_and_connects_an_openssl_device(tmp_path, request):
    python = sdk_python(Path(request.config.cache.mkdir("azure-iot-device-venv")))
    dps_address, *hub_addresses = free_loopback_addresses(3)
    company = openssl_device(tmp_path, "sdk-device-1")
    hubs = [
        HubProcess(tmp_path / f"hub-{i}.db", workers=1, host=address, args=("--mqtts-port", "8883", *ADMISSION))
        for i, address in enumerate(hub_addresses)
    ]
    dps = DpsProcess(tmp_path / "dps.db", workers=1, host=dps_address, args=("--mqtts-port", "8883"))
    try:
        for process in [*hubs, dps]:
            process.start()
        for hub in hubs:
            dps.link(hub)  # named by its address: the host the device connects to
        dps.enroll("sdk-fleet", dps.register_ca(company, hubs), "hashed", hub_addresses)
        config = {
            "cert": str(tmp_path / "chain.pem"),
            "key": str(tmp_path / "device.key"),
            "dps": dps_address,
            "id": "sdk-device-1",
            "scope": dps.id_scope,
            "dps_ca": dps.tls_ca,
            "hub_cas": {hub.bind: hub.tls_ca for hub in hubs},
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        (tmp_path / "sdk_device.py").write_text(SCRIPT)
        done = subprocess.run(
            [python, str(tmp_path / "sdk_device.py"), str(tmp_path / "config.json")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["status"] == "assigned" and result["device_id"] == "sdk-device-1", result
        assert result["hub"] in hub_addresses and result["substatus"] == "initialAssignment"
        registration = dps.admin("GET", "/registrations/sdk-device-1").json()
        assert registration["assignedHub"] == result["hub"]
        assigned = next(hub for hub in hubs if hub.bind == result["hub"])
        device = assigned.admin("GET", "/devices/sdk-device-1").json()
        assert device["provisioned"]["thumbprint"] == registration["thumbprint"]
        assert device["first_seen"] is not None and device["authentications"] >= 1, device
    finally:
        for process in [dps, *hubs]:
            try:
                process.stop()
            finally:
                process.kill()
