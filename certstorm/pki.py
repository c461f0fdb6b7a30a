"""``certstorm pki``: the supply-chain PKI with every key made inside a PKCS#11 token and never leaving it
(docs/hsm.md).

Each action opens one token, with its holder's PIN file, so no custodian touches another's token: Company-X
makes its CA (``ca``) and proves it to a hub (``prove``); Factory-Y and Technician-Z each make a key and a
certificate request in their own token (``csr``) and their issuer signs it in its token (``sign``); devices
make their keys and requests in a device token (``devices``), Technician-Z signs them (``sign --device``),
and ``fleet`` checks the result and writes a fleet the swarm can drive. ``chain`` runs all of it, one token
at a time. PINs are read from files only their owner may read; none is ever taken from the command line
or printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devicekit.fleet import (
    CERTIFICATES_FILE,
    REQUESTS_FILE,
    Fleet,
    assemble_token_fleet,
    make_device_keys,
    read_requests,
)
from devicekit.hsm import DEFAULT_MODULE, TokenError, open_token
from devicekit.hubclient import HubClient, HubError, admin_token
from devicekit.pki import COMPANY, DEFAULT_CUSTODIANS, Custodian, certificate_request
from hubsim.argtypes import integer

__all__ = ["add_pki_arguments", "assemble", "chain", "make_ca", "make_csr", "pki_command", "prove", "sign_requests"]

PEM = serialization.Encoding.PEM
FACTORY, TECHNICIAN = DEFAULT_CUSTODIANS[0], DEFAULT_CUSTODIANS[1]


class Refused(Exception):
    """What the operator must change: one line, exit status 2."""


def _module_arg(p) -> None:
    p.add_argument(
        "--pkcs11-module",
        default=DEFAULT_MODULE,
        metavar="PATH",
        help=f"the PKCS#11 module (default {DEFAULT_MODULE}, Debian's softhsm2)",
    )


class _NoPin(argparse.Action):
    """A PIN flag (``--pin``, ``--company-pin``, ...) is refused without repeating the value. Abbreviations are
    off for every action, so ``--company-pin`` can never be read as ``--company-pin-file``."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"argument {option_string}: a PIN is never taken from the command line (it would stay in the shell's "
            "history and the process list); write it to a file only you can read and give --pin-file FILE"
        )


def _no_pin(p, *holders: str, plain: bool = True) -> None:
    flags = ("--pin", "--so-pin", "--user-pin") if plain else ()
    for flag in (*flags, *(f"--{who}-pin" for who in holders)):
        p.add_argument(flag, action=_NoPin, nargs="?", help=argparse.SUPPRESS)


def _token_args(p, who: str = "the custodian's") -> None:
    _module_arg(p)
    p.add_argument("--token", required=True, metavar="LABEL", help=f"{who} token label")
    p.add_argument(
        "--pin-file",
        required=True,
        metavar="FILE",
        help="the token's user PIN on the first line; mode 600 (owner only)",
    )
    _no_pin(p)


def add_pki_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)

    p = sub.add_parser("ca", help="make Company-X's key in its token and its self-signed CA certificate")
    _token_args(p, "Company-X's")
    p.add_argument("--name", default=COMPANY, help=f"the CA's name, its subject CN (default {COMPANY})")
    p.add_argument("--key", default=None, metavar="LABEL", help="the key's label in the token (default: --name)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the CA certificate (PEM)")

    p = sub.add_parser("keys", help="list the private keys in a token and whether any could ever leave it")
    _token_args(p, "the")

    p = sub.add_parser("csr", help="make a custodian's key in its own token and a certificate request signed by it")
    _token_args(p)
    p.add_argument("--name", required=True, help="the custodian's name, e.g. Factory-Y")
    p.add_argument("--key", default=None, metavar="LABEL", help="the key's label in the token (default: --name)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the request (PEM)")

    p = sub.add_parser("sign", help="sign certificate requests in the issuer's token: a custodian's, or devices'")
    _token_args(p, "the issuer's")
    p.add_argument("--ca", required=True, metavar="FILE", help="the issuer's own certificate (PEM)")
    p.add_argument("--key", default=None, metavar="LABEL", help="the issuer's key label (default: its CN)")
    p.add_argument("--csr", required=True, metavar="FILE", help="the request(s) to sign, PEM")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the certificate(s), PEM")
    p.add_argument("--device", action="store_true", help="the requests are devices': device certificates")
    p.add_argument(
        "--path-length", type=integer(0, 5), default=None, metavar="N", help="a custodian's pathLen (default none)"
    )

    p = sub.add_parser(
        "prove", help="register Company-X's CA with a hub and prove it with a certificate signed in the token"
    )
    _token_args(p, "Company-X's")
    p.add_argument("--ca", required=True, metavar="FILE", help="Company-X's CA certificate (PEM)")
    p.add_argument("--key", default=None, metavar="LABEL", help="the CA key's label (default: its CN)")
    p.add_argument("--hub", required=True, metavar="URL", help="the hub's HTTP URL")
    p.add_argument("--admin-token-file", required=True, metavar="FILE", help="the hub's management token")

    p = sub.add_parser("devices", help="make device keys in the device token and each device's certificate request")
    _token_args(p, "the devices'")
    p.add_argument("--count", type=integer(1, 100_000), required=True, metavar="N", help="devices to make")
    p.add_argument("--out", required=True, metavar="DIR", help=f"the fleet directory: {REQUESTS_FILE} goes there")

    p = sub.add_parser("fleet", help="check the devices' certificates against their requests and write the fleet")
    p.add_argument("dir", metavar="DIR", help=f"the fleet directory, with {REQUESTS_FILE}")
    _token_args(p, "the devices'")
    p.add_argument(
        "--certificates",
        required=True,
        metavar="FILE",
        help=f"the devices' certificates (e.g. DIR/{CERTIFICATES_FILE})",
    )
    p.add_argument(
        "--chain",
        required=True,
        nargs="+",
        metavar="FILE",
        help="the custodians' certificates below Company-X, nearest the devices first",
    )
    p.add_argument("--ca", required=True, metavar="FILE", help="Company-X's CA certificate")
    p.add_argument("--company-token", default=None, metavar="LABEL", help="Company-X's token, to prove the CA to hubs")
    p.add_argument("--company-pin-file", default=None, metavar="FILE", help="its PIN file")
    _no_pin(p, "company", plain=False)  # its own --pin is the devices' token's, above
    p.add_argument("--company-key", default=COMPANY, metavar="LABEL", help=f"its key label (default {COMPANY})")

    p = sub.add_parser("chain", help="all of it, one token at a time: Company-X → Factory-Y → Technician-Z → devices")
    _module_arg(p)
    holders = ("company", "factory", "technician", "device")
    _no_pin(p, *holders)
    for who in holders:
        p.add_argument(f"--{who}-token", required=True, metavar="LABEL", help=f"the {who} token")
        p.add_argument(f"--{who}-pin-file", required=True, metavar="FILE", help=f"the {who} token's PIN file")
    p.add_argument("--devices", type=integer(1, 100_000), required=True, metavar="N", help="devices to make")
    p.add_argument("--out", required=True, metavar="DIR", help="where certificates, requests and the fleet go")
    p.add_argument("--hub", default=None, metavar="URL", help="also register and prove Company-X's CA at this hub")
    p.add_argument("--admin-token-file", default=None, metavar="FILE", help="with --hub: its management token")
    for action in sub.choices.values():  # a PIN given to a shortened flag name must not pass for a file name
        action.allow_abbrev = False


# -- the actions, each with one token open ---------------------------------------------------------------------
def _fresh(path: str) -> Path:
    out = Path(path)
    if out.exists():
        raise Refused(f"argument --out: {out} exists; choose a new file (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _certificate(path: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise Refused(f"argument {what}: {path} is not a PEM certificate ({exc})") from None


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _holder(token, cert: x509.Certificate, label: str | None) -> Custodian:
    """The custodian whose certificate is ``cert``, with its key from ``token``: refused when the token's key
    is not the certificate's (another custodian's token cannot sign for it)."""
    name = _cn(cert)
    key = token.key(label or name)
    if key.public_key() != cert.public_key():
        raise TokenError(
            "key_mismatch",
            f"token {token.label!r}: the key {key.label!r} is not the key of {name}'s certificate; "
            "only the holder's own token signs for it",
        )
    return Custodian.restore(name, key, cert)


def make_ca(module: str, token: str, pin_file: str, name: str, label: str | None, out: str) -> x509.Certificate:
    path = _fresh(out)
    with open_token(module, token, pin_file) as t:
        custodian = Custodian.self_signed(name, t.generate_key(label or name))
    path.write_bytes(custodian.certificate.public_bytes(PEM))
    return custodian.certificate


def make_csr(module: str, token: str, pin_file: str, name: str, label: str | None, out: str) -> None:
    path = _fresh(out)
    with open_token(module, token, pin_file) as t:
        request = certificate_request(t.generate_key(label or name), name)
    path.write_bytes(request.public_bytes(PEM))


def sign_requests(
    module: str,
    token: str,
    pin_file: str,
    ca: str,
    label: str | None,
    csr: str,
    out: str,
    *,
    device: bool,
    path_length: int | None = None,
) -> list[x509.Certificate]:
    path = _fresh(out)
    issuer_cert = _certificate(ca, "--ca")
    requests = read_requests(csr)
    if not device and len(requests) != 1:
        raise Refused(f"argument --csr: a custodian's request is one request, {csr} holds {len(requests)}")
    with open_token(module, token, pin_file) as t:
        issuer = _holder(t, issuer_cert, label)
        if device:
            issued = [issuer.sign_device_csr(r) for r in requests]
        else:
            issued = [issuer.sign_csr(requests[0], path_length=path_length)]
    path.write_bytes(b"".join(c.public_bytes(PEM) for c in issued))
    return issued


def prove(module: str, token: str, pin_file: str, ca: str, label: str | None, hub: str, token_file: str) -> dict:
    cert = _certificate(ca, "--ca")
    client = HubClient(hub, token=admin_token(token_file))
    with open_token(module, token, pin_file) as t:
        return client.ensure_ca(_holder(t, cert, label))


def _bundle(paths: list[str], what: str) -> list[x509.Certificate]:
    out = []
    for path in paths:
        try:
            out += x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise Refused(f"argument {what}: {path} is not a file of PEM certificates ({exc})") from None
    return out


def assemble(
    args_dir: str, module: str, token: str, pin_file: str, certificates: str, chain, ca: str, company
) -> Fleet:
    certs = _bundle([certificates], "--certificates")
    intermediates = _bundle(list(chain), "--chain")
    names = [_cn(c) for c in reversed(intermediates)]
    assemble_token_fleet(
        args_dir,
        module=module,
        token=token,
        pin_file=pin_file,
        certificates=certs,
        intermediates=intermediates,
        ca_certificate=_certificate(ca, "--ca"),
        custodians=[_cn(_certificate(ca, "--ca")), *names],
        company=company,
    )
    return Fleet.open(args_dir)  # logs in and matches every device's key to its certificate


def chain(args) -> Fleet:
    """Company-X → Factory-Y → Technician-Z → devices, each step with only its own token open."""
    m, out = args.pkcs11_module, Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise Refused(f"argument --out: {out} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)

    def cert(name: str) -> str:
        return str(out / f"{name.lower()}.pem")

    def request(name: str) -> str:
        return str(out / f"{name.lower()}.csr")

    step = _stepper()
    make_ca(m, args.company_token, args.company_pin_file, COMPANY, None, cert(COMPANY))
    step(f"{COMPANY}: key made in token {args.company_token!r}, CA certificate {cert(COMPANY)}")
    links = (
        (FACTORY, args.factory_token, args.factory_pin_file, COMPANY, args.company_token, args.company_pin_file, 1),
        (
            TECHNICIAN,
            args.technician_token,
            args.technician_pin_file,
            FACTORY,
            args.factory_token,
            args.factory_pin_file,
            0,
        ),
    )
    for name, token, pin, issuer, issuer_token, issuer_pin, path_length in links:
        make_csr(m, token, pin, name, None, request(name))
        sign_requests(
            m,
            issuer_token,
            issuer_pin,
            cert(issuer),
            None,
            request(name),
            cert(name),
            device=False,
            path_length=path_length,
        )
        step(f"{name}: key made in token {token!r}, its request signed by {issuer} in token {issuer_token!r}")
    fleet_dir = out / "fleet"
    with open_token(m, args.device_token, args.device_pin_file) as token:
        make_device_keys(fleet_dir, token, args.devices)
    step(f"{args.devices} device keys made in token {args.device_token!r}, requests in {fleet_dir / REQUESTS_FILE}")
    sign_requests(
        m,
        args.technician_token,
        args.technician_pin_file,
        cert(TECHNICIAN),
        None,
        str(fleet_dir / REQUESTS_FILE),
        str(fleet_dir / CERTIFICATES_FILE),
        device=True,
    )
    step(f"{args.devices} device certificates signed by {TECHNICIAN} in token {args.technician_token!r}")
    company = {"module": m, "token": args.company_token, "pin_file": args.company_pin_file, "key": COMPANY}
    fleet = assemble(
        str(fleet_dir),
        m,
        args.device_token,
        args.device_pin_file,
        str(fleet_dir / CERTIFICATES_FILE),
        [cert(TECHNICIAN), cert(FACTORY)],
        cert(COMPANY),
        company,
    )
    step(f"fleet {fleet_dir}: every device's key is in its token and matches its certificate")
    if args.hub:
        if not args.admin_token_file:
            raise Refused("argument --hub: give the hub's management token with --admin-token-file")
        done = prove(m, args.company_token, args.company_pin_file, cert(COMPANY), None, args.hub, args.admin_token_file)
        step(
            f"{COMPANY}'s CA at {args.hub}: {done['status']} ({done['action']}), proven in token {args.company_token!r}"
        )
    return fleet


def _stepper():
    started = time.perf_counter()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", flush=True)

    return step


def pki_command(args: argparse.Namespace) -> int:
    m = args.pkcs11_module
    try:
        if args.action == "ca":
            cert = make_ca(m, args.token, args.pin_file, args.name, args.key, args.out)
            print(f"{args.name}: key made in token {args.token!r} (never extractable); CA certificate {args.out}")
            print(f"  SHA-256 {cert.fingerprint(cert.signature_hash_algorithm).hex()}")
        elif args.action == "keys":
            with open_token(m, args.token, args.pin_file, rw=False) as token:
                rows = token.describe_private_keys()
            for row in rows:
                kept = row["local"] and row["always_sensitive"] and row["never_extractable"] and not row["extractable"]
                print(
                    f"{row['label']}: made in the token {_yes(row['local'])}, sensitive {_yes(row['sensitive'])}, "
                    f"extractable {_yes(row['extractable'])}, never extractable {_yes(row['never_extractable'])}"
                    + ("" if kept else "  <- this key could leave or came from outside")
                )
            print(f"{len(rows)} private key(s) in token {args.token!r}")
        elif args.action == "csr":
            make_csr(m, args.token, args.pin_file, args.name, args.key, args.out)
            print(f"{args.name}: key made in token {args.token!r}; certificate request {args.out}")
        elif args.action == "sign":
            issued = sign_requests(
                m,
                args.token,
                args.pin_file,
                args.ca,
                args.key,
                args.csr,
                args.out,
                device=args.device,
                path_length=args.path_length,
            )
            kind = "device certificate(s)" if args.device else "CA certificate"
            print(f"signed {len(issued)} {kind} in token {args.token!r}: {args.out}")
        elif args.action == "prove":
            done = prove(m, args.token, args.pin_file, args.ca, args.key, args.hub, args.admin_token_file)
            print(
                f"CA {done['id'][:16]}… at {args.hub}: {done['status']} ({done['action']}), "
                f"proven in token {args.token!r}"
            )
        elif args.action == "devices":
            with open_token(m, args.token, args.pin_file) as token:
                path = make_device_keys(args.out, token, args.count, progress=_progress(sys.stderr))
            print(f"{args.count} device keys made in token {args.token!r}; their certificate requests: {path}")
        elif args.action == "fleet":
            company = None
            if args.company_token or args.company_pin_file:
                if not (args.company_token and args.company_pin_file):
                    raise Refused("argument --company-token: give it with --company-pin-file")
                company = {
                    "module": m,
                    "token": args.company_token,
                    "pin_file": args.company_pin_file,
                    "key": args.company_key,
                }
            fleet = assemble(args.dir, m, args.token, args.pin_file, args.certificates, args.chain, args.ca, company)
            print(
                f"fleet {args.dir}: {fleet.count} devices, keys in token {args.token!r} "
                f"(certstorm swarm --fleet {args.dir})"
            )
            fleet.close()
        else:
            chain(args).close()
    except (Refused, TokenError) as exc:
        return _refused(str(exc))
    except (ValueError, OSError) as exc:
        return _refused(str(exc) or type(exc).__name__)
    except HubError as exc:
        print(f"certstorm pki: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _progress(stream):
    """Every tenth of the way, on one line: key pairs in a file-backed token take tens of milliseconds each."""
    shown = [0]

    def show(done: int, total: int) -> None:
        if done == total or done * 10 // total > shown[0]:
            shown[0] = done * 10 // total
            end = "\n" if done == total else "\r"
            print(f"  {done}/{total} device keys", end=end, file=stream, flush=True)

    return show if os.isatty(stream.fileno()) else None


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _refused(message: str) -> int:
    print(f"certstorm pki: error: {message}", file=sys.stderr)
    return 2
