"""The device requests' wire format, shared by both HTTP fronts (aiohttp's and the raw fast path) and the
worker's core: body limits and accepted content types, JSON and base64 reading, and the reply every front
puts on the wire (errors as ``{"error": code, "message": text}`` with the status of the engine's code,
built in one place: :func:`error_reply`)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import NamedTuple

from hubsim.errors import AuthError

JSON_LIMIT = 16 * 1024  # proof and admin JSON bodies
# Content types a certificate upload may carry. curl's --data-binary defaults to the form type, so it is
# accepted too (the body is used as is). JSON, multipart forms and the like are refused with 415.
PEM_TYPES = frozenset(
    {
        "",
        "application/x-pem-file",
        "application/pem-certificate-chain",
        "application/pkix-cert",
        "application/x-x509-ca-cert",
        "application/x-x509-user-cert",
        "application/octet-stream",
        "text/plain",
        "application/x-www-form-urlencoded",
    }
)
JSON_TYPES = frozenset({"", "application/json", "text/plain", "application/x-www-form-urlencoded"})


class DeviceReply(NamedTuple):
    """A reply, transport-free: what any front end puts on the wire."""

    status: int
    body: bytes  # JSON
    timing: str  # the Server-Timing header value
    retry_after: str | None


def error_reply(exc: AuthError, timing: str = "", retry_after: str | None = None) -> DeviceReply:
    """The one place an error body is made. A throttled client always learns when to come back."""
    if exc.code == "throttled" and retry_after is None:
        retry_after = "1"
    return DeviceReply(exc.status, json.dumps(exc.to_json()).encode(), timing, retry_after)


def timing_header(chain: float, pop: float) -> str:
    """The Server-Timing value of a device step: seconds spent judging the chain and the proof."""
    return f"chain;dur={chain * 1e3:.3f}, pop;dur={pop * 1e3:.3f}"


def decode_b64(text, field: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise AuthError("malformed_input", f"{field!r} must be a non-empty base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    # Line-wrapped output of `openssl base64`, or the URL-safe alphabet.
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("malformed_input", f"{field!r} is not valid base64") from None


def json_object(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: '[[[[...' nested deeply
        raise AuthError("malformed_input", "the body is not a JSON document") from None
    if not isinstance(doc, dict):
        raise AuthError("malformed_input", "the body must be a JSON object")
    return doc


__all__ = [
    "JSON_LIMIT",
    "JSON_TYPES",
    "PEM_TYPES",
    "DeviceReply",
    "decode_b64",
    "error_reply",
    "json_object",
    "timing_header",
]
