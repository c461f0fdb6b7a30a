"""The faces every fleet and device identity show, whether the keys are in the fleet's file or in a token."""

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


class FleetBase:
    """What every fleet offers, from its ``count``, ``id_prefix``, ``id_width``, CA and intermediates; a
    subclass says how one identity is made (``_identity``) and what closing releases."""

    def __len__(self) -> int:
        return self.count

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def issuer_certificate(self) -> x509.Certificate:
        """The certificate that signs device certificates (nearest intermediate, or the CA at depth 0)."""
        return self.intermediates[0] if self.intermediates else self.ca_certificate

    def device_id(self, index: int) -> str:
        return f"{self.id_prefix}{index:0{self.id_width}d}"

    def identity(self, index: int):
        """Device ``index`` (0 to count - 1)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"device index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.count:
            raise IndexError(f"device index {index} out of range for a fleet of {self.count}")
        return self._identity(index)


__all__ = ["FleetBase", "IdentityBase"]
