"""The swarm's one Locust user class: a connection slot, which authenticates one device after another."""

from __future__ import annotations

import random
import time

import gevent
from locust import User, constant, task

from devicekit.httpclient import Connection
from loadgen import _mqtt
from loadgen._device import attempt
from loadgen._state import Swarm, current

__all__ = ["DeviceSlot"]


class DeviceSlot(User):
    """One keep-alive connection to the hub, authenticating one device after another."""

    wait_time = constant(0)

    def on_start(self):
        sw = current()
        while not sw.ready.wait(timeout=1.0):
            if sw.failed_setup:
                self.stop(force=False)
                return
        self.conn = (
            sw.auth.connection()
            if getattr(sw.auth, "transport", "http") == _mqtt.SCHEME
            else Connection(sw.hub_url, timeout=sw.options.request_timeout)
        )
        self.rng = random.Random()  # the storm and churn backoffs' jitter
        sw.recorder.cpu.start()

    def on_stop(self):
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    @task
    def work(self):
        sw = current()
        shape = sw.options.shape
        if shape == "closed":
            self._closed(sw)
        elif shape in ("steady", "step", "follow"):
            self._paced(sw)
        else:
            self._queued(sw, churn=shape == "churn")
        while True:  # finished or out of devices: idle until Locust stops the slot
            gevent.sleep(60)

    def _closed(self, sw: Swarm):
        conn = self.conn
        while not sw.draining:
            nxt = sw.next_device()
            if nxt is None:
                return
            sw.in_flight += 1
            try:
                attempt(sw, conn, nxt[0], nxt[1])
            finally:
                sw.in_flight -= 1

    def _paced(self, sw: Swarm):
        """Authenticate at the due times of the process's pacer (back to back when it runs closed)."""
        conn, rec, pacer = self.conn, sw.recorder, sw.pacer

        def stopping() -> bool:
            return sw.draining

        while not sw.draining:
            intended = pacer.take(stopping)
            if sw.draining:
                return
            nxt = sw.next_device()
            if nxt is None:
                return
            rec.second(time.time() if intended is None else intended)[0] += 1
            sw.in_flight += 1
            try:
                attempt(sw, conn, nxt[0], nxt[1], intended=intended, phase=sw.phase)
            finally:
                sw.in_flight -= 1

    def _queued(self, sw: Swarm, churn: bool):
        q, conn, rec, backoff = sw.queue, self.conn, sw.recorder, sw.backoff
        stay, away = sw.options.churn_stay, sw.options.churn_away
        while not sw.draining:
            now = time.time()
            item = q.pop_due(now)
            if item is None:
                if q.finished:
                    sw.mark_done()
                    return
                due = q.next_due()
                gevent.sleep(min(max((due - now) if due is not None else 0.05, 0.001), 0.05))
                continue
            _, _, index, retry, first_attempt, previous = item
            if first_attempt is None:
                first_attempt = now
            if retry:
                rec.counts["retries"] += 1
                rec.second(now)[3] += 1
            rec.bucket(now)[0] += 1
            reconnect = churn and bool(rec.admitted[index])
            sw.in_flight += 1
            try:
                out = attempt(sw, conn, index, 1 if reconnect else 0)
            finally:
                sw.in_flight -= 1
            end = time.time()
            if out.ok:
                rec.bucket(end)[1] += 1
                if churn:
                    if reconnect:
                        rec.counts["reconnects"] += 1
                    online = q.exp(stay)
                    rec.online_delta[int(end)] += 1
                    rec.online_delta[int(end + online)] -= 1
                    q.push(end + online + q.exp(away), index, 0, None, 0.0)
                else:
                    q.admitted += 1
            else:
                rec.bucket(end)[2] += 1
                if out.retriable and not backoff.gives_up(first_attempt, end):
                    d = backoff.delay(
                        retry + 1,
                        now=end,
                        throttled=out.status == 429,
                        connection_error=out.status == 0,
                        previous=previous,
                        rng=self.rng,
                    )
                    q.push(end + d, index, retry + 1, first_attempt, d)
                else:
                    q.gave_up += 1
                    rec.counts["gave_up"] += 1
            q.settle()
