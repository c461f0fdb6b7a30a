"""The crypto floor every figure of the product is compared with: two raw P-256 verifies.

Figures are reported as ratios to this floor measured in the same run, because these machines are
shared and noisy: an absolute time from one moment means little, a ratio of two things measured side
by side means a lot.
"""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ECDSA_P256", "FloorProbe"]

ECDSA_P256 = ec.ECDSA(hashes.SHA256())


class FloorProbe:
    """Two raw P-256 verifies with already-parsed keys: the least any device authentication can cost
    the hub (one check of the device certificate's signature, one of the proof)."""

    def __init__(self):
        key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = key.public_key()
        self.message = os.urandom(300)
        self.signature = key.sign(self.message, ECDSA_P256)

    def run(self, n: int) -> float:
        """Seconds for ``n`` floors (2n verifies)."""
        verify, sig, msg = self.public_key.verify, self.signature, self.message
        start = time.perf_counter()
        for _ in range(n):
            verify(sig, msg, ECDSA_P256)
            verify(sig, msg, ECDSA_P256)
        return time.perf_counter() - start
