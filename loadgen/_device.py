"""What happens on the device's side of an authentication besides talking to the hub: its own latencies
(``--device-profile``, ``--network``), waited with ``gevent.sleep`` so that the generator's CPU does not pay
for them; a failure of the device itself (its token failing in the middle of a run), recorded under its own
code while every other device goes on; and how many authentications are in flight, sampled for Little's law."""

from __future__ import annotations

import random
import time

import gevent

from devicekit.hsm import TokenError
from devicekit.profiles import Profile
from loadgen._outcome import Outcome

__all__ = ["SAMPLE_EVERY", "Waits", "attempt", "sample_in_flight"]

SAMPLE_EVERY = 0.02  # seconds between samples of the authentications in flight


class Waits:
    """One process's waits: each device's signing latency and each exchange's round trip, drawn from the
    profile (a device keeps its class and network), slept, and added up in the recorder."""

    def __init__(self, profile: Profile, recorder):
        self.profile = profile
        self.rng = random.Random()
        self.waited = recorder.waited

    def sign(self, index: int) -> None:
        self._wait("sign", self.profile.sign_delay(index, self.rng))

    def rtt(self, index: int) -> None:
        self._wait("rtt", self.profile.round_trip(index, self.rng))

    def pauser(self, index: int):
        """``pause(kind)`` for a TLS client: ``"sign"`` or ``"rtt"`` for device ``index``."""
        return lambda kind: self.sign(index) if kind == "sign" else self.rtt(index)

    def _wait(self, kind: str, seconds: float) -> None:
        slot = self.waited[kind]
        slot[0] += seconds
        slot[1] += 1
        if seconds > 0:
            gevent.sleep(seconds)


def attempt(sw, conn, index: int, pass_number: int = 0, **kwargs) -> Outcome:
    """``sw.auth.authenticate(...)``, its duration recorded; a device whose token fails is one failed
    authentication, coded ``sign:<code>`` (``sign:key_missing``, ``sign:token_failed`` ...), not a failed
    slot: it is not retried (the device cannot prove possession) and the slot goes on with the next device."""
    rec = sw.recorder
    started = time.time()
    try:
        return sw.auth.authenticate(conn, index, pass_number, **kwargs)
    except TokenError as exc:
        rec.counts["failed"] += 1
        rec.failures[f"sign:{exc.code}"] += 1
        rec.second(time.time())[2] += 1
        sw.env.events.request.fire(
            request_type="DEVICE", name="sign", response_time=0.0, response_length=0, exception=exc.code, context={}
        )
        return Outcome(False, exc.code, "sign", 0, retriable=False)
    finally:
        rec.attempt_ended(started, time.time())


def sample_in_flight(sw) -> None:
    """Every 20 ms while the run goes on: how many of this process's authentications are under way."""
    while True:
        rec = sw.recorder
        if rec is not None and not sw.draining:
            rec.sample_in_flight(time.time(), sw.in_flight)
        gevent.sleep(SAMPLE_EVERY)
