"""DPS's MQTT-over-TLS listener: the hub's listener (mutual TLS over pyOpenSSL memory BIOs, the engine's
cached path judging the presented chain) speaking DPS's MQTT conventions.

* CONNECT: client id = registration id = the certificate's CN (a valid registration id); username
  ``{idScope}/registrations/{registrationId}/api-version=...`` with this service's id scope and the same
  registration id. Anything else: CONNACK 5 (not authorised), counted with its code.
* SUBSCRIBE ``$dps/registrations/res/#`` (granted at QoS 0; other filters are refused in the SUBACK).
* PUBLISH ``$dps/registrations/PUT/iotdps-register/?$rid={rid}`` with ``{"registrationId": ...}``: the
  device is attested again, its group checked, an operation started; answered on
  ``$dps/registrations/res/202/?$rid={rid}&retry-after={s}`` with ``{"operationId", "status":
  "assigning"}``.
* PUBLISH ``$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}``: 202 while
  assigning, 200 with ``registrationState`` once assigned (committed), 503 ``hub_unavailable`` with a
  retry-after when the hub could not record it (the next poll tries again), or the refusal's status.

Refusals on the register and poll topics are answered on ``$dps/registrations/res/{status}/?$rid=...``
with ``{"error": code, "message": ...}`` and counted in ``/metrics`` (step ``register`` or ``poll``).
TLS sessions are not resumed: every connection presents its chain, which every registration re-judges.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque

from OpenSSL import SSL

from hubsim import mqtt
from hubsim.dps.core import RETRIABLE, Operation, Provisioner, registration_state
from hubsim.dps.topics import POLL_TOPIC, REGISTER_TOPIC, RESPONSE_FILTER, parse_topic, response_topic
from hubsim.errors import AuthError
from hubsim.service.codec import json_object
from hubsim.service.mqtts import MqttsFront, MqttsProtocol
from hubsim.service.quota import retry_after_header

REGISTER_PAYLOAD_LIMIT = 8 * 1024  # bytes of registration JSON; the MQTT packet limit (16 KiB) is above it
OPERATIONS_PER_CONNECTION = 16


def parse_username(username: str | None) -> tuple[str, str]:
    """(id scope, registration id) of ``{idScope}/registrations/{registrationId}/api-version=...``."""
    parts = (username or "").split("/", 3)
    if len(parts) != 4 or parts[1] != "registrations" or not parts[3].startswith("api-version="):
        raise AuthError(
            "malformed_input", "the username must be {idScope}/registrations/{registrationId}/api-version=..."
        )
    return parts[0], parts[2]


class DpsFront(MqttsFront):
    """One DPS worker's TLS listener: the hub's, with DPS's protocol and no session resumption."""

    hub: Provisioner

    def protocol(self) -> DpsProtocol:
        return DpsProtocol(self)

    def _new_context(self, anchors: tuple[bytes, ...]) -> SSL.Context:
        ctx = super()._new_context(anchors)
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return ctx


class DpsProtocol(MqttsProtocol):
    """One device's provisioning connection."""

    front: DpsFront

    def __init__(self, front: DpsFront):
        super().__init__(front)
        self.client_id = ""
        self.registration_id = ""
        self.operations: OrderedDict[str, Operation] = OrderedDict()
        self.polls: deque[float] = deque()

    # -- CONNECT ------------------------------------------------------------------------------------------
    def _connect(self, request: mqtt.Connect) -> None:
        if request.level != 4:
            self._refuse("mqtt_protocol_level", connack=mqtt.BAD_PROTOCOL)
            return
        core = self.front.hub
        try:
            if not self.chain:
                raise AuthError("chain_untrusted", "no certificate chain was presented in this handshake")
            scope, registration_id = parse_username(request.username)
            if scope != core.id_scope:
                raise AuthError("id_scope_mismatch")
            admission = core.attest(self.chain, request.client_id)
            if registration_id != admission.device_id:
                raise AuthError("registration_id_mismatch")
        except AuthError as exc:
            self._refuse(exc.code, connack=mqtt.NOT_AUTHORISED)
            return
        core.metrics.connected("mqtts")
        self.client_id = request.client_id
        self.registration_id = admission.device_id
        self.connected = True
        self.keepalive = request.keepalive * 1.5 if request.keepalive else 300.0
        self._send(mqtt.encode_connack(mqtt.ACCEPTED))
        self._rearm(self.keepalive)

    # -- after CONNACK ------------------------------------------------------------------------------------
    def _packet(self, packet: mqtt.Packet) -> None:
        if packet.kind == mqtt.SUBSCRIBE:
            packet_id, filters = mqtt.parse_subscribe(packet)
            self._send(mqtt.encode_suback(packet_id, [0 if f == RESPONSE_FILTER else 0x80 for f, _ in filters]))
        elif packet.kind == mqtt.UNSUBSCRIBE:
            packet_id, _ = mqtt.parse_subscribe(packet)
            self._send(mqtt.encode_unsuback(packet_id))
        elif packet.kind == mqtt.PUBLISH:
            publish = mqtt.parse_publish(packet)
            ack = mqtt.publish_ack(publish)
            if ack is not None:
                self._send(ack)
            self._request(publish)
        elif packet.kind == mqtt.PUBACK:
            pass
        else:
            super()._packet(packet)

    def _request(self, publish: mqtt.Publish) -> None:
        path, params = parse_topic(publish.topic)
        rid = params.get("$rid", "")
        if path == REGISTER_TOPIC:
            step, answer = "register", self._register
        elif path == POLL_TOPIC:
            step, answer = "poll", self._poll
        else:
            self._answer(404, rid, AuthError("not_found", f"no DPS request topic {path!r}"), "register")
            return
        try:
            if not rid or len(rid) > 128:
                raise AuthError("malformed_input", "the request topic needs a $rid of 1 to 128 characters")
            answer(rid, publish.payload, params)
        except AuthError as exc:  # throttles and a hub that is down are answered where they arise
            self._answer(exc.status, rid, exc, step)

    def _answer(self, status: int, rid: str, body, step: str | None = None, retry_after: int | None = None) -> None:
        """Publish a response; an AuthError body is a refusal, counted under ``step``."""
        if isinstance(body, AuthError):
            if step is not None:
                self.front.hub.metrics.refused(step, body.code)
            body = body.to_json()
        if self.tls is not None:
            self._send(mqtt.encode_publish(response_topic(status, rid, retry_after), json.dumps(body).encode()))

    def _register(self, rid: str, payload: bytes, params: dict) -> None:
        core = self.front.hub
        if len(payload) > REGISTER_PAYLOAD_LIMIT:
            raise AuthError("upload_too_large", f"a registration payload holds at most {REGISTER_PAYLOAD_LIMIT} bytes")
        doc = json_object(payload)
        named = doc.get("registrationId", self.registration_id)
        if not isinstance(named, str):
            raise AuthError("malformed_input", "'registrationId' must be a string")
        if named != self.registration_id:
            raise AuthError("registration_id_mismatch")
        wait = core.registration_throttle()
        if wait:
            self._answer(429, rid, AuthError("throttled"), "register", int(retry_after_header(wait)))
            return
        admission = core.attest(self.chain, self.client_id)  # revocations and CA removals since CONNECT
        operation = core.begin(admission)
        self.operations[operation.id] = operation
        while len(self.operations) > OPERATIONS_PER_CONNECTION:
            self.operations.popitem(last=False)
        status, body = operation.answer()
        self._answer(status, rid, body, retry_after=core.config.retry_after if status == 202 else None)

    def _poll(self, rid: str, payload: bytes, params: dict) -> None:
        core = self.front.hub
        limit, window = core.config.poll_limit
        now = time.monotonic()
        polls = self.polls
        while polls and polls[0] <= now - window:
            polls.popleft()
        if len(polls) >= limit:
            wait = int(retry_after_header(polls[0] + window - now))
            self._answer(
                429, rid, AuthError("throttled", f"at most {limit} polls per {window:g} s per device"), "poll", wait
            )
            return
        polls.append(now)
        operation_id = params.get("operationId", "")
        operation = self.operations.get(operation_id)
        if operation is None:
            row = core.store.registration_by_operation(operation_id) if operation_id else None
            if row is None or row["id"] != self.registration_id:
                raise AuthError("operation_not_found")
            body = {"operationId": operation_id, "status": "assigned", "registrationState": registration_state(row)}
            self._answer(200, rid, body)
            return
        status, body = operation.answer()
        if status == 202:
            self._answer(202, rid, body, retry_after=core.config.retry_after)
        elif status == 200:
            self._answer(200, rid, body)
        else:  # counted when the operation failed
            retry = None
            if operation.error.code in RETRIABLE:
                retry = core.config.retry_after
                core.again(operation)
            self._answer(status, rid, body, retry_after=retry)


__all__ = [
    "OPERATIONS_PER_CONNECTION",
    "POLL_TOPIC",
    "REGISTER_PAYLOAD_LIMIT",
    "REGISTER_TOPIC",
    "RESPONSE_FILTER",
    "DpsFront",
    "DpsProtocol",
    "parse_topic",
    "parse_username",
    "response_topic",
]
