"""The face every device identity shows, whether its key is in the fleet's file or in a token."""

from __future__ import annotations

from cryptography import x509

from hubsim import pem_certificate
from hubsim import sign as pop_sign


class IdentityBase:
    """What every device identity offers, from its ``certificate_der``, ``private_key`` and its fleet's
    intermediates; a subclass says where the certificate and the key come from."""

    __slots__ = ()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    def chain_der(self) -> list[bytes]:
        """Leaf first, then the intermediates (nearest issuer first)."""
        return [self.certificate_der, *self._fleet.intermediates_der]

    def chain_pem(self) -> bytes:
        """A PEM bundle, leaf first."""
        return pem_certificate(self.certificate_der) + self._fleet.intermediates_pem

    def sign(self, challenge: bytes) -> bytes:
        """Proof of possession over ``challenge`` (:func:`hubsim.algorithms.sign`), wherever the key is."""
        return pop_sign(self.private_key, challenge)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device_id!r})"


__all__ = ["IdentityBase"]
