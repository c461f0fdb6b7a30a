"""A device's provisioning through DPS over MQTT with mutual TLS, client side, in DPS's MQTT conventions:
client id = registration id = the certificate's CN, username ``{idScope}/registrations/{id}/api-version=
2019-03-31``, subscribe ``$dps/registrations/res/#``, publish the registration on
``$dps/registrations/PUT/iotdps-register/?$rid=...``, then poll ``iotdps-get-operationstatus`` after each
``retry-after`` until the answer is 200 (assigned) or a refusal.

The connection is :class:`devicekit.mqtts.MqttsClient`'s (pyOpenSSL over an ordinary socket, so it
cooperates under gevent). :class:`DpsSession` exposes the single requests, for tests that send what a
well-behaved device would not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

from devicekit.mqtts import MqttsClient, MqttsFailure, MqttsTarget
from hubsim import mqtt
from hubsim.dps.topics import POLL_TOPIC, REGISTER_TOPIC, RESPONSE_FILTER, RESPONSE_PREFIX, parse_topic

API_VERSION = "2019-03-31"
RESPONSES = RESPONSE_FILTER
REGISTER = REGISTER_TOPIC + "?$rid={rid}"
POLL = POLL_TOPIC + "?$rid={rid}&operationId={operation}"


class DpsAnswer(NamedTuple):
    status: int
    rid: str
    retry_after: float | None
    body: dict


class Assignment(NamedTuple):
    hub: str  # assignedHub: the host the device connects to next
    device_id: str
    operation_id: str
    substatus: str
    polls: int
    state: dict  # registrationState as DPS sent it


class DpsRefused(Exception):
    """DPS answered a registration or poll with a refusal; ``code`` is its error code."""

    def __init__(self, status: int, code: str, message: str = "", retry_after: float | None = None):
        super().__init__(f"{status} {code}" + (f" ({message})" if message else ""))
        self.status, self.code, self.retry_after = status, code, retry_after


@dataclass(frozen=True)
class DpsTarget:
    """Where DPS listens and how to reach it."""

    host: str
    port: int = 8883
    id_scope: str = ""
    ca_file: str | None = None
    tls_version: str = "1.2"  # what the device SDKs speak
    timeout: float = 10.0

    def mqtts(self) -> MqttsTarget:
        username = f"{self.id_scope}/registrations/{{device_id}}/api-version={API_VERSION}"
        return MqttsTarget(
            self.host, self.port, self.ca_file, tls_version=self.tls_version, username=username, timeout=self.timeout
        )


def parse_response(topic: str, payload: bytes) -> DpsAnswer:
    """The status, request id, retry-after and JSON body of a ``$dps/registrations/res/...`` message."""
    path, params = parse_topic(topic)
    status = path.removeprefix(RESPONSE_PREFIX).rstrip("/")
    if not path.startswith(RESPONSE_PREFIX) or not status.isdigit():
        raise MqttsFailure("dps", "dps_bad_response", f"not a DPS response topic: {topic!r}")
    try:
        body = json.loads(payload) if payload else {}
    except ValueError:
        raise MqttsFailure("dps", "dps_bad_response", "the response is not JSON") from None
    retry = params.get("retry-after")
    return DpsAnswer(int(status), params.get("$rid", ""), float(retry) if retry else None, body)


class DpsSession:
    """One device's open provisioning connection."""

    def __init__(self, target: DpsTarget, client: MqttsClient | None = None):
        self.target = target
        self.client = client or MqttsClient(target.mqtts())
        self.connection = None
        self._rid = 0

    def connect(self, device_id: str, chain: list[bytes], key, *, client_id: str | None = None) -> DpsSession:
        """TLS, CONNECT (CONNACK 0 or MqttsFailure ``connack_N``) and the subscription to the responses."""
        self.connection = self.client.connect(device_id, chain, key, client_id=client_id)
        self.connection.send(mqtt.encode_subscribe(1, [(RESPONSES, 1)]))
        _, codes = mqtt.parse_suback(self.connection.read_packet("subscribe"))
        if codes != [0] and codes != [1]:
            raise MqttsFailure("subscribe", "dps_subscription_refused", f"SUBACK {codes}")
        return self

    def request(self, topic: str, payload: bytes) -> DpsAnswer:
        """Publish a request and read the response on the subscribed topic."""
        self.connection.send(mqtt.encode_publish(topic, payload))
        while True:
            packet = self.connection.read_packet("dps")
            if packet.kind != mqtt.PUBLISH:
                continue
            publish = mqtt.parse_publish(packet)
            return parse_response(publish.topic, publish.payload)

    def next_rid(self) -> str:
        self._rid += 1
        return str(self._rid)

    def register(self, registration_id: str, payload: bytes | None = None) -> DpsAnswer:
        body = payload if payload is not None else json.dumps({"registrationId": registration_id}).encode()
        return self.request(REGISTER.format(rid=self.next_rid()), body)

    def poll(self, operation_id: str) -> DpsAnswer:
        topic = POLL.format(rid=self.next_rid(), operation=quote(operation_id, safe=""))
        return self.request(topic, b"")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def provision(
    target: DpsTarget,
    device_id: str,
    chain: list[bytes],
    key,
    *,
    client: MqttsClient | None = None,
    max_polls: int = 120,
    sleep=time.sleep,
    min_wait: float = 0.0,
) -> Assignment:
    """Register ``device_id`` and poll until DPS assigns it (or refuses: DpsRefused; transport failures:
    MqttsFailure). Between polls the device waits DPS's retry-after, and at least ``min_wait`` doubled at
    each poll (so a device under a small retry-after stays within DPS's polling limit)."""
    session = DpsSession(target, client).connect(device_id, chain, key)
    try:
        answer = session.register(device_id)
        operation, polls = "", 0
        while True:
            body = answer.body
            if answer.status == 200 and body.get("status") == "assigned":
                state = body.get("registrationState") or {}
                hub, substatus = state.get("assignedHub", ""), state.get("substatus", "")
                operation = body.get("operationId", operation)
                return Assignment(hub, state.get("deviceId", device_id), operation, substatus, polls, state)
            if answer.status == 202:
                operation = body.get("operationId") or operation
            elif answer.retry_after is None:
                raise DpsRefused(answer.status, body.get("error", f"status_{answer.status}"), body.get("message", ""))
            if polls >= max_polls:
                raise DpsRefused(answer.status, "dps_gave_up", f"still {answer.status} after {polls} polls")
            sleep(max(min_wait * 2 ** min(polls, 8), answer.retry_after or 0.0))
            polls += 1
            answer = session.poll(operation) if operation else session.register(device_id)
    finally:
        session.close()


__all__ = [
    "API_VERSION",
    "POLL",
    "REGISTER",
    "RESPONSES",
    "Assignment",
    "DpsAnswer",
    "DpsRefused",
    "DpsSession",
    "DpsTarget",
    "parse_response",
    "provision",
]
