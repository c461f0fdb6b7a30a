"""What happens on the device's side of an authentication besides talking to the hub: a failure of the
device itself (its token failing in the middle of a run) recorded under its own code, while every other
device goes on."""

from __future__ import annotations

import time

from devicekit.hsm import TokenError
from loadgen._outcome import Outcome

__all__ = ["attempt"]


def attempt(sw, conn, index: int, pass_number: int = 0, **kwargs) -> Outcome:
    """``sw.auth.authenticate(...)``; a device whose token fails is one failed authentication, coded
    ``sign:<code>`` (``sign:key_missing``, ``sign:token_failed`` ...), not a failed slot: it is not retried
    (the device cannot prove possession) and the slot goes on with the next device."""
    try:
        return sw.auth.authenticate(conn, index, pass_number, **kwargs)
    except TokenError as exc:
        rec = sw.recorder
        rec.counts["failed"] += 1
        rec.failures[f"sign:{exc.code}"] += 1
        rec.second(time.time())[2] += 1
        sw.env.events.request.fire(
            request_type="DEVICE", name="sign", response_time=0.0, response_length=0, exception=exc.code, context={}
        )
        return Outcome(False, exc.code, "sign", 0, retriable=False)
