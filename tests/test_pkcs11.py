"""Keys in PKCS#11 tokens (SoftHSM2), refusals first: PIN files others may read, wrong PINs, missing modules,
tokens and keys, one custodian's PIN against another's token, keys a token would let out; then that no
private key is extractable or appears outside its token, that a token-signed chain and its devices are
admitted by the engine, and that a device whose token key is gone is refused at proof."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pkcs11 as p11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from certstorm.pki import make_ca, make_csr, sign_requests
from devicekit.fleet import Fleet, TokenFleet
from devicekit.hsm import DEFAULT_MODULE, TokenError, TokenKey, open_token, read_pin
from devicekit.pki import COMPANY, Custodian, certificate_request, requested_name
from hubsim import AuthEngine, AuthError, verify_signature
from hubsim import sign as pop_sign

M = DEFAULT_MODULE


def refused(code: str, fn, *args, **kwargs) -> TokenError:
    with pytest.raises(TokenError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    assert "\n" not in str(info.value)
    return info.value


def one_line_refusal(proc, *needles: str) -> str:
    """A command refused with one line naming what, exit status 2, no traceback, no PIN."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("certstorm pki: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- PIN files, modules, tokens, keys: refused --------------------------------------------------------------
def test_a_pin_file_others_may_read_is_refused(softhsm):
    label, pin_file = softhsm.token("loose")
    pin = Path(pin_file).read_text().strip()
    loose = softhsm.pin_file("loose-copy", pin, mode=0o644)
    error = refused("pin_file", open_token, M, label, loose)
    assert "chmod 600" in str(error) and pin not in str(error)
    refused("pin_file", read_pin, str(softhsm.root / "no-such.pin"))
    refused("pin_file", read_pin, softhsm.pin_file("empty", ""))
    refused("pin_file", read_pin, str(softhsm.root))  # a directory


def test_a_wrong_pin_is_refused_naming_the_file_and_the_token(softhsm):
    label, _ = softhsm.token("guarded")
    wrong = softhsm.pin_file("wrong", "not-the-pin")
    error = refused("pin_incorrect", open_token, M, label, wrong)
    assert wrong in str(error) and label in str(error) and "not-the-pin" not in str(error)


def test_a_missing_module_or_token_is_refused(softhsm):
    label, pin_file = softhsm.token("present")
    refused("pkcs11_module_missing", open_token, str(softhsm.root / "nowhere.so"), label, pin_file)
    error = refused("token_missing", open_token, M, "no-such-token", pin_file)
    assert "no-such-token" in str(error)


def test_a_key_label_that_is_not_there_is_refused(softhsm):
    label, pin_file = softhsm.token("keyless")
    with open_token(M, label, pin_file) as token:
        refused("key_missing", token.key, "absent")
        token.generate_key("present")
        refused("key_exists", token.generate_key, "present")
        refused("key_algorithm", token.generate_key, "other", "ed25519")


def test_a_key_the_token_would_let_out_is_refused(softhsm):
    label, pin_file = softhsm.token("leaky")
    with open_token(M, label, pin_file) as token:
        params = token.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        params.generate_keypair(
            store=True, label="exportable", private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False}
        )
        refused("key_extractable", token.key, "exportable")
        refused("key_extractable", token.keys)  # a token holding a key that can leave is not used at all


def test_a_key_that_could_once_leave_is_refused_after_it_was_locked_in(softhsm):
    label, pin_file = softhsm.token("relocked")
    with open_token(M, label, pin_file) as token:
        params = token.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        _, private = params.generate_keypair(
            store=True, label="was-out", private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False}
        )
        private[Attribute.SENSITIVE] = True  # one-way changes: it looks held now, but a copy may exist
        private[Attribute.EXTRACTABLE] = False
        refused("key_imported", token.key, "was-out")
        refused("key_imported", token.keys)


def test_two_keys_under_one_label_are_refused_by_the_whole_token_read(softhsm):
    label, pin_file = softhsm.token("twins")
    with open_token(M, label, pin_file) as token:
        params = token.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        for _ in range(2):
            params.generate_keypair(store=True, label="twin")
        refused("key_ambiguous", token.key, "twin")
        refused("key_ambiguous", token.keys)


def test_one_custodians_pin_cannot_sign_for_another(softhsm, tmp_path):
    company, company_pin = softhsm.token("company-x")
    factory, factory_pin = softhsm.token("factory-y")
    make_ca(M, company, company_pin, COMPANY, None, str(tmp_path / "company-x.pem"))
    make_csr(M, factory, factory_pin, "Factory-Y", None, str(tmp_path / "factory-y.csr"))
    # Factory-Y's PIN does not open Company-X's token ...
    refused("pin_incorrect", open_token, M, company, factory_pin)
    # ... and Factory-Y's own token holds no Company-X key to sign with
    refused(
        "key_missing",
        sign_requests,
        M,
        factory,
        factory_pin,
        str(tmp_path / "company-x.pem"),
        None,
        str(tmp_path / "factory-y.csr"),
        str(tmp_path / "out.pem"),
        device=False,
    )
    # nor does any key of Factory-Y's, whatever its label, pass for Company-X's
    refused(
        "key_mismatch",
        sign_requests,
        M,
        factory,
        factory_pin,
        str(tmp_path / "company-x.pem"),
        "Factory-Y",
        str(tmp_path / "factory-y.csr"),
        str(tmp_path / "out.pem"),
        device=False,
    )
    assert not (tmp_path / "out.pem").exists()
    proc = softhsm.certstorm(
        "pki", "sign", "--token", company, "--pin-file", factory_pin, "--ca", str(tmp_path / "company-x.pem"),
        "--csr", str(tmp_path / "factory-y.csr"), "--out", str(tmp_path / "out.pem"),
    )  # fmt: skip
    one_line_refusal(proc, factory_pin, company, "wrong PIN")
    assert Path(factory_pin).read_text().strip() not in proc.stdout + proc.stderr


def test_a_request_whose_sender_does_not_hold_the_key_is_refused(softhsm, tmp_path):
    company, company_pin = softhsm.token("company-x")
    with open_token(M, company, company_pin) as token:
        issuer = Custodian.self_signed(COMPANY, token.generate_key(COMPANY))
        honest = certificate_request(ec.generate_private_key(ec.SECP256R1()), "Factory-Y")
        # a request whose signature does not verify: the CN altered after signing
        der = bytearray(honest.public_bytes(serialization.Encoding.DER))
        at = der.find(b"Factory-Y")
        der[at : at + 9] = b"Factory-Z"
        forged = x509.load_der_x509_csr(bytes(der))
        with pytest.raises(ValueError, match="does not verify"):
            issuer.sign_csr(forged)
        two_names = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name.from_rfc4514_string("CN=Factory-Y,O=Elsewhere")
        )
        with pytest.raises(ValueError, match="one common name"):
            requested_name(two_names.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))


def test_bad_arguments_of_the_command_are_one_line_each(softhsm, tmp_path):
    label, pin_file = softhsm.token("args")
    loose = softhsm.pin_file("args-loose", "123456", mode=0o640)
    cases = [
        (("ca", "--token", label, "--pin-file", loose, "--out", str(tmp_path / "a.pem")), ("chmod 600",)),
        (
            ("ca", "--token", "missing-token", "--pin-file", pin_file, "--out", str(tmp_path / "b.pem")),
            ("missing-token",),
        ),
        (
            (
                "ca",
                "--pkcs11-module",
                str(tmp_path / "none.so"),
                "--token",
                label,
                "--pin-file",
                pin_file,
                "--out",
                str(tmp_path / "c.pem"),
            ),
            ("none.so",),
        ),
        (
            (
                "sign",
                "--token",
                label,
                "--pin-file",
                pin_file,
                "--ca",
                str(tmp_path / "nothing.pem"),
                "--csr",
                str(tmp_path / "nothing.csr"),
                "--out",
                str(tmp_path / "d.pem"),
            ),
            ("--ca", "nothing.pem"),
        ),
    ]
    for args, needles in cases:
        one_line_refusal(softhsm.certstorm("pki", *args), *needles)
    for flag in ("--pin", "--pin=", "--so-pin"):  # no PIN on a command line, and none repeated in an error
        args = (
            "ca",
            "--token",
            label,
            "--out",
            str(tmp_path / "e.pem"),
            *((flag + "1234",) if "=" in flag else (flag, "1234")),
        )
        proc = softhsm.certstorm("pki", *args)
        assert proc.returncode == 2 and "never taken from the command line" in proc.stderr, proc.stderr
        assert "1234" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a shortened flag name never takes a PIN for a file name (it would be written into the fleet's files)
    fleet = ("fleet", str(tmp_path / "f"), "--token", label, "--pin-file", pin_file, "--certificates", "c")
    for args in (
        (*fleet, "--chain", "x", "--ca", "y", "--company-pin", "918273"),
        ("csr", "--token", label, "--name", "n", "--out", "o", "--pin-fil", "918273"),
        ("chain", "--company-pin", "918273"),
    ):
        proc = softhsm.certstorm("pki", *args)
        assert proc.returncode == 2 and "918273" not in proc.stderr, proc.stderr


# -- what holds: keys stay in their tokens ------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(softhsm, tmp_path_factory):
    """Company-X → Factory-Y → Technician-Z → 6 devices, every key in its own token, by ``certstorm pki chain``."""
    tokens = {who: softhsm.token(who) for who in ("company", "factory", "technician", "device")}
    out = tmp_path_factory.mktemp("chain") / "pki"
    args = ["pki", "chain", "--devices", "6", "--out", str(out)]
    for who, (label, pin_file) in tokens.items():
        args += [f"--{who}-token", label, f"--{who}-pin-file", pin_file]
    proc = softhsm.certstorm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tokens, out


def test_no_private_key_is_extractable_or_outside_its_token(chain):
    tokens, out = chain
    private_keys = 0
    for label, pin_file in tokens.values():
        with open_token(M, label, pin_file, rw=False) as token:
            for key in token.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                private_keys += 1
                assert key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
                assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
                assert key[Attribute.LOCAL]  # made inside the token, not imported
                with pytest.raises(p11.exceptions.AttributeSensitive):
                    key[Attribute.VALUE]
            for held in token.keys().values():
                refused("key_not_extractable", held.private_bytes, None, None, None)
                refused("key_not_extractable", held.private_numbers)
    assert private_keys == 3 + 6  # one per custodian, one per device
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".pem", ".csr", ".json"}, files
    for path in files:
        text = path.read_bytes()
        assert b"PRIVATE KEY" not in text, path
        kinds = set(re.findall(rb"-----BEGIN ([A-Z ]+)-----", text))
        assert kinds <= {b"CERTIFICATE", b"CERTIFICATE REQUEST"}, (path, kinds)  # nothing but public material


def test_the_token_chain_and_its_devices_are_admitted(chain):
    _, out = chain
    fleet = Fleet.open(out / "fleet")
    try:
        assert isinstance(fleet, TokenFleet) and fleet.count == 6 and fleet.depth == 2
        engine = AuthEngine(secret=os.urandom(32), clock=time.time, random=os.urandom)
        company = fleet.custodian()
        assert isinstance(company._key, TokenKey)  # Company-X signs its proof in its own token
        record = engine.register_ca(fleet.ca_certificate.public_bytes(serialization.Encoding.PEM))
        proof = company.verification_certificate(record.verification_code)
        assert (
            engine.verify_ca(record.id, certificate=proof.public_bytes(serialization.Encoding.DER)).status == "verified"
        )
        for i in range(fleet.count):
            identity = fleet.identity(i)
            challenge = engine.begin(identity.chain_der())
            signature = identity.sign(challenge.token)
            assert verify_signature(identity.certificate.public_key(), signature, challenge.token)
            assert engine.complete(challenge.token, signature).device_id == identity.device_id
    finally:
        fleet.close()


def test_a_device_whose_token_key_was_deleted_is_refused_at_proof(softhsm, tmp_path):
    tokens = {who: softhsm.token(who) for who in ("company", "factory", "technician", "device")}
    args = ["pki", "chain", "--devices", "3", "--out", str(tmp_path / "pki")]
    for who, (label, pin_file) in tokens.items():
        args += [f"--{who}-token", label, f"--{who}-pin-file", pin_file]
    assert softhsm.certstorm(*args).returncode == 0
    engine = AuthEngine(secret=os.urandom(32), clock=time.time, random=os.urandom)
    fleet = Fleet.open(tmp_path / "pki" / "fleet")
    try:
        company = fleet.custodian()
        record = engine.register_ca(fleet.ca_certificate.public_bytes(serialization.Encoding.PEM))
        engine.verify_ca(record.id, signature=company.sign_code(record.verification_code))
        gone, replaced, ok = fleet.identity(0), fleet.identity(1), fleet.identity(2)
        device_label, device_pin = tokens["device"]
        refused("token_busy", open_token, M, device_label, device_pin)  # no second login unchecked by its PIN
        fleet.key(0), fleet.key(1)  # the fleet holds its handles to the certified keys
        # an operator with the device token's PIN deletes two device keys and makes another key there
        pin = Path(device_pin).read_text().strip()
        tool = ["pkcs11-tool", "--module", M, "--token-label", device_label, "--login", "--pin", pin]
        for label in (gone.device_id, replaced.device_id):
            softhsm.run(*tool, "--delete-object", "--type", "privkey", "--label", label)
        softhsm.run(*tool, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "impostor", "--id", "99")
        impostor = fleet._token.key("impostor")
        # the key is gone: the device cannot answer its challenge, and nothing is admitted for it
        challenge = engine.begin(gone.chain_der())
        refused("key_missing", gone.sign, challenge.token)
        # a key in the device's token that is not its certified key: the hub refuses the proof
        challenge = engine.begin(replaced.chain_der())
        with pytest.raises(AuthError) as info:
            engine.complete(challenge.token, pop_sign(impostor, challenge.token))
        assert info.value.code == "pop_invalid", info.value.code
        # the untouched device is still admitted
        challenge = engine.begin(ok.chain_der())
        assert engine.complete(challenge.token, ok.sign(challenge.token)).device_id == ok.device_id
    finally:
        fleet.close()
    # opening the fleet again finds the missing and the mismatched keys before any run
    error = refused("key_missing", Fleet.open, tmp_path / "pki" / "fleet")
    assert gone.device_id in str(error)
