"""The engine's one error type and its stable, machine-readable codes.

Every refusal the hub makes is an :class:`AuthError` carrying one of the codes below. The HTTP layer maps
each code to its status; clients and load generators classify failures by code, so codes never change
meaning once published. ``docs/errors.md`` lists them for people.
"""

from __future__ import annotations

# code -> (HTTP status, what it means)
CODES: dict[str, tuple[int, str]] = {
    # input shape and bounds
    "malformed_input": (400, "The body is not a certificate, PEM bundle, DER list or JSON document the hub can read."),
    "upload_too_large": (413, "The upload exceeds the byte limit, checked before any parsing."),
    "too_many_certificates": (
        400,
        "The chain holds more certificates than the policy allows (after dropping duplicates).",
    ),
    "chain_ambiguous": (
        400,
        "Two certificates in the upload share a subject name; such chains make path building explode.",
    ),
    "private_key_in_upload": (
        400,
        "The upload carries a private key (PEM, PKCS#8, PKCS#1, SEC1 or PKCS#12). "
        "It was discarded, not stored or logged.",
    ),
    "unsupported_media_type": (415, "The request's content type is not one the endpoint accepts."),
    # CA registration and proof of possession
    "not_a_ca": (400, "The certificate is not a CA: BasicConstraints CA:TRUE and keyCertSign are required."),
    "ca_exists": (409, "A CA with this fingerprint is already registered."),
    "ca_not_found": (404, "No CA with this fingerprint is registered."),
    "ca_already_verified": (
        409,
        "The CA is already verified; its verification code was used and cannot be used again.",
    ),
    "verification_code_mismatch": (
        400,
        "The verification certificate's subject CN is not the CA's current verification code.",
    ),
    "verification_code_expired": (400, "The verification code has expired; request a new one."),
    "verification_signature_invalid": (
        401,
        "The verification certificate or signature was not made with the CA's private key.",
    ),
    # certificate content
    "cert_expired": (401, "A certificate on the path is past its notAfter."),
    "cert_not_yet_valid": (401, "A certificate on the path is before its notBefore."),
    "unsupported_algorithm": (
        400,
        "Key or signature algorithm outside policy: P-256/384/521, RSA >= 2048, Ed25519 device keys, SHA-2.",
    ),
    "leaf_is_ca": (401, "The device certificate is a CA certificate."),
    "key_usage_invalid": (401, "The device certificate's KeyUsage lacks digitalSignature."),
    "eku_invalid": (401, "The device certificate's ExtendedKeyUsage does not allow clientAuth."),
    "device_id_missing": (400, "The device certificate's subject has no usable common name (the device id)."),
    "device_id_invalid": (
        400,
        "The device certificate's common name is not a valid string of its declared type (e.g. bad UTF-8).",
    ),
    "chain_untrusted": (401, "No valid path from the device certificate to a verified CA."),
    "cert_revoked": (403, "A certificate on the device's path has been revoked."),
    # devices and challenges
    "device_disabled": (403, "The device has been disabled in the registry."),
    "device_not_provisioned": (
        403,
        "This hub admits only devices a provisioning service assigned to it (--admission provisioned), "
        "with the certificate it attested; this device is not one.",
    ),
    "device_id_mismatch": (401, "The id the device claims (its MQTT client id) is not its certificate's common name."),
    "device_not_found": (404, "No device with this id is in the registry."),
    "challenge_invalid": (401, "The challenge was not issued by this hub, or was altered."),
    "challenge_expired": (401, "The challenge has expired; ask for a new one."),
    "challenge_used": (401, "The challenge was already answered (proofs are single-use)."),
    "pop_invalid": (401, "The signature over the challenge does not verify under the device certificate's key."),
    # service
    "not_found": (404, "No such endpoint."),
    "method_not_allowed": (405, "The endpoint does not take this method."),
    "throttled": (429, "The configured connection quota is exceeded; retry after the time given."),
    "internal_error": (500, "The hub failed on its own account; the request may be retried. Never caused by input."),
    # the management plane's credential (docs/api.md, "Management credential")
    "admin_token_missing": (
        401,
        "A management endpoint was called without a credential: send 'Authorization: Bearer <token>'.",
    ),
    "admin_token_malformed": (
        401,
        "The Authorization header is not one 'Bearer <token>' with a token of the allowed characters.",
    ),
    "admin_token_invalid": (401, "The bearer token is not the hub's management token."),
    "admin_locked_out": (429, "Too many bad credentials from this address; retry after the time given."),
    "management_disabled": (403, "This hub runs with --management off: management endpoints are refused."),
    "revocation_not_found": (404, "Nothing to revoke: the fingerprint is not a valid SHA-256 hex string."),
    # the Device Provisioning Service (docs/dps.md)
    "registration_id_invalid": (
        400,
        "The device certificate's common name is not a valid registration id: 1 to 128 characters of "
        "a-z A-Z 0-9 - . _ :, ending in a letter, digit or '-'.",
    ),
    "registration_id_mismatch": (
        401,
        "The registration id the device names (MQTT username or registration payload) is not its certificate's CN.",
    ),
    "id_scope_mismatch": (401, "The id scope in the MQTT username is not this provisioning service's."),
    "enrollment_missing": (401, "The device's chain leads to a verified CA that no enrollment group uses."),
    "enrollment_disabled": (403, "The device's enrollment group is disabled."),
    "enrollment_group_not_found": (404, "No enrollment group with this id."),
    "enrollment_group_conflict": (409, "Another enrollment group already uses this CA."),
    "hub_not_found": (404, "No linked hub with this name."),
    "hub_unavailable": (
        503,
        "The hub the device is allocated to could not record it; nothing was assigned. Retry after the time given.",
    ),
    "operation_not_found": (404, "No registration operation with this id for this device."),
    "registration_not_found": (404, "No registration with this id."),
}


class AuthError(Exception):
    """A refusal with a stable ``code`` (a key of :data:`CODES`) and a human ``message``.

    Messages never quote uploaded key material.
    """

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message or CODES[code][1]
        super().__init__(f"{code}: {self.message}")

    @property
    def status(self) -> int:
        return CODES[self.code][0]

    def to_json(self) -> dict:
        return {"error": self.code, "message": self.message}


__all__ = ["CODES", "AuthError"]
