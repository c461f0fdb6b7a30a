"""The swarm's HTTP transport: one device authentication over the hub's two-step exchange, recorded.

:meth:`Authenticator.authenticate` does what a device does: build its PEM chain (leaf re-spliced from the
fleet template, then the intermediates), ``POST /devices/challenge``, sign the raw challenge with the
device's own key (loaded from its fleet record on first use), ``POST /devices/proof``.

Locust's statistics get the two HTTP requests only, ``POST challenge`` and ``POST proof``, so its
requests/s and percentiles count real requests; the whole authentication and the signing step are timed
in the swarm's own µs histograms. Failures are named by the hub's JSON error code (``throttled``, ...),
``http_<status>`` when a refusal is not the hub's JSON, the transport failure (``connection_refused``,
``timeout``, ...), or what made a reply unreadable (``chunked_reply``, ``reply_not_json``, ...).
"""

from __future__ import annotations

import binascii
import time

from devicekit.httpclient import Connection, Reply, WireError, challenge_of, first_connection_of
from hubsim import pem_certificate, signature_args
from loadgen._outcome import Outcome
from loadgen._recorder import Recorder

__all__ = ["RETRIABLE_STATUS", "Authenticator", "error_code"]

PEM_TYPE = b"application/x-pem-file"
JSON_TYPE = b"application/json"
RETRIABLE_STATUS = (429, 500, 502, 503, 504)
_HUB_STEP = {"challenge": "chain", "proof": "pop"}  # the Server-Timing entry each request reports
_READERS = {"challenge": challenge_of, "proof": first_connection_of}

_now = time.time
_perf = time.perf_counter


def error_code(reply: Reply) -> str:
    """The hub's JSON error code of a refusal, or ``http_<status>`` when the reply does not carry one."""
    try:
        code = reply.json().get("error")
    except WireError:
        code = None
    return code if isinstance(code, str) and code else f"http_{reply.status}"


class Authenticator:
    """Performs authentications for one process and records them (shared by all its users)."""

    def __init__(self, fleet, recorder: Recorder, fire):
        self.fleet = fleet
        self.rec = recorder
        self.fire = fire
        self.intermediates = fleet.intermediates_pem
        # the scheme is the fleet's, not the key's: look it up once (isinstance checks on ABCs are not free)
        self.sign_args = signature_args(fleet.identity(0).private_key) if fleet.count else ()
        self.device = None  # --device-profile/--network: the waits of loadgen._device.Waits, or None

    def authenticate(
        self,
        conn: Connection,
        index: int,
        pass_number: int = 0,
        *,
        intended: float | None = None,
        phase: int | None = None,
    ) -> Outcome:
        rec, perf = self.rec, _perf
        costs = rec.costs
        t0 = perf()
        identity = self.fleet.identity(index)
        body = pem_certificate(identity.certificate_der) + self.intermediates
        t1 = perf()
        _add(costs["prepare"], t1 - t0)
        device = self.device
        if device is not None:  # the round trip of the challenge request, waited (it is in the request's time)
            device.rtt(index)
        result = self._exchange(conn, "challenge", b"/devices/challenge", PEM_TYPE, body, t1, t0)
        if type(result) is Outcome:
            return result
        (challenge, raw), t2 = result
        t3 = perf()
        _add(costs["parse_challenge"], t3 - t2)
        if device is not None:  # the device's own signing time, waited, not computed
            device.sign(index)
            t3 = perf()
        signature = identity.private_key.sign(raw, *self.sign_args)
        t4 = perf()
        _add(costs["sign"], t4 - t3)
        rec.hist["sign"].record((t4 - t3) * 1e6)
        proof = b'{"challenge":"%s","signature":"%s"}' % (challenge, binascii.b2a_base64(signature, newline=False))
        t5 = perf()
        _add(costs["build_proof"], t5 - t4)
        if device is not None:
            device.rtt(index)
        result = self._exchange(conn, "proof", b"/devices/proof", JSON_TYPE, proof, t5, t0)
        if type(result) is Outcome:
            return result
        first, t6 = result
        t7 = perf()
        _add(costs["parse_proof"], t7 - t6)
        total = t6 - t0
        rec.admission(index, pass_number, total, intended=intended, phase=phase, first=first)
        return Outcome(True, first=first)

    def _exchange(
        self, conn: Connection, step: str, path: bytes, content_type: bytes, body: bytes, sent: float, t0: float
    ):
        """One request of an authentication, sent at ``sent``: records the hub's Server-Timing for the
        step and, on a 200, the Locust entry and the step's histogram. Returns ``(what the step's reader
        found in the reply, received)``, or the failed :class:`Outcome` when the connection failed, the hub
        refused, or its 200 did not carry what the step needs (``reply_not_json``, ...)."""
        rec, perf = self.rec, _perf
        try:
            reply = conn.post(path, content_type, body)
        except WireError as exc:
            return self._failed(step, exc.code, 0, perf() - sent, t0, retriable=True)
        received = perf()
        hub_step = _HUB_STEP[step]
        timing = reply.server_timing()
        if hub_step in timing:
            rec.hist["hub_" + hub_step].record(timing[hub_step] * 1000.0)
        if reply.status != 200:
            return self._failed(
                step,
                error_code(reply),
                reply.status,
                received - sent,
                t0,
                retriable=reply.status in RETRIABLE_STATUS,
                retry_after=reply.retry_after(),
            )
        try:
            found = _READERS[step](reply.json())
        except WireError as exc:
            return self._failed(step, exc.code, reply.status, received - sent, t0, retriable=False)
        self.fire(
            request_type="POST",
            name=step,
            response_time=(received - sent) * 1000.0,
            response_length=len(reply.body),
            exception=None,
            context={},
        )
        rec.hist[step].record((received - sent) * 1e6)
        return found, received

    def _failed(
        self,
        step: str,
        code: str,
        status: int,
        elapsed: float,
        t0: float,
        *,
        retriable: bool,
        retry_after: float | None = None,
    ) -> Outcome:
        rec = self.rec
        self.fire(
            request_type="POST",
            name=step,
            response_time=elapsed * 1000.0,
            response_length=0,
            exception=code,
            context={},
        )
        rec.counts["failed"] += 1
        rec.failures[f"{step}:{code}"] += 1
        rec.second(_now())[2] += 1
        return Outcome(False, code, step, status, retriable, retry_after)


def _add(slot: list, seconds: float) -> None:
    slot[0] += int(seconds * 1e9)
    slot[1] += 1
