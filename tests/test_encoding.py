"""The project's one DER header writer and reader and its one PEM wrapper, against cryptography."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from devicekit.pki import SupplyChain
from hubsim import der_header, pem_certificate, read_der_header


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 24])
def test_a_written_header_reads_back(length):
    header = der_header(0x30, length)
    assert read_der_header(header + b"\0" * min(length, 16)) == (len(header), length)
    assert len(header) == (2 if length < 128 else 2 + (length.bit_length() + 7) // 8)


@pytest.mark.parametrize("alg", ["p256", "rsa2048"])
def test_pem_and_der_framing_match_cryptography_on_real_certificates(alg):
    chain = SupplyChain.build(1, alg)
    device = chain.device("device-0001")
    for cert in (device.certificate, *device.chain):
        der = cert.public_bytes(Encoding.DER)
        assert pem_certificate(der) == cert.public_bytes(Encoding.PEM)
        header, content = read_der_header(der)
        assert header + content == len(der)
        assert x509.load_pem_x509_certificate(pem_certificate(der)) == cert
