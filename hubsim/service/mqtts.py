"""The hub's MQTT-over-TLS listener: devices prove possession of their key in the TLS handshake (the
client's Certificate and CertificateVerify), then CONNECT (MQTT 3.1.1) with the certificate's CN as id.

TLS is pyOpenSSL over memory BIOs in the worker's event loop: Python's ``ssl`` validates client chains
itself and gives only the leaf, while ``cached`` mode needs the chain as presented. Two modes, to measure
what the engine's cache buys (docs/tls.md):

- ``full``: OpenSSL validates the whole chain in every handshake (as nginx and Mosquitto do);
- ``cached``: OpenSSL checks only CertificateVerify; the engine's cached path judges the presented chain.

Either way the engine then applies revocation, disabled devices and the registry; a resumed session
skips chain validation, as on real servers. Every refusal is counted in ``/metrics`` by its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL, crypto

from hubsim import mqtt
from hubsim.service.hub import Hub, TlsRefusal
from hubsim.service.tlsfiles import TlsFiles
from hubsim.tlsbio import outgoing

log = logging.getLogger("certstorm.hub")

MODES = ("full", "cached")
IDLE_TIMEOUT = 300.0  # seconds a connected device with keepalive 0 may stay silent
# OpenSSL verification errors with an engine code of their own; every other one is chain_untrusted.
_VERIFY_CODES = {9: "cert_not_yet_valid", 10: "cert_expired", 23: "cert_revoked"}


@dataclass(frozen=True)
class MqttsSettings:
    port: int = 8883
    mode: str = "cached"
    connect_timeout: float = 10.0  # seconds from accept to CONNECT (handshake included)
    max_packet: int = 16 * 1024  # bytes per MQTT packet
    resumable: int = 65_536  # admitted sessions remembered per worker for resumption


def _fingerprint(cert: crypto.X509) -> bytes:
    return hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).digest()


class MqttsFront:
    """One worker's TLS listener state: the contexts (rebuilt when the verified CAs change) and the
    sessions it may resume."""

    def __init__(self, hub: Hub, files: TlsFiles, settings: MqttsSettings):
        self.hub = hub
        self.files = files
        self.settings = settings
        self.connections: set[MqttsProtocol] = set()
        self._anchors: tuple[bytes, ...] | None = None
        self._context: SSL.Context | None = None
        # leaf fingerprint -> (device id, path): what a resumed session stands for.
        self._sessions: OrderedDict[bytes, tuple[str, tuple[bytes, ...]]] = OrderedDict()

    def protocol(self) -> MqttsProtocol:
        return MqttsProtocol(self)

    def context(self) -> SSL.Context:
        anchors = tuple(self.hub.engine.anchors()) if self.settings.mode == "full" else ()
        if self._context is None or anchors != self._anchors:
            self._context = self._new_context(anchors)
            self._anchors = anchors
            self._sessions.clear()  # the old context's tickets cannot be resumed by the new one
        return self._context

    def _new_context(self, anchors: tuple[bytes, ...]) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)  # an idle held connection keeps no read or write buffer
        ctx.use_certificate_chain_file(self.files.cert)
        ctx.use_privatekey_file(self.files.key)
        ctx.set_session_id(b"certstorm-mqtts")  # needed to resume sessions of certificate-verified clients
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        if self.settings.mode == "full":
            store = ctx.get_cert_store()
            for der in anchors:
                store.add_cert(crypto.X509.from_cryptography(x509.load_der_x509_certificate(der)))
            store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)  # a verified intermediate is an anchor too
            ctx.set_verify_depth(self.hub.engine.policy.chain.max_chain_depth)
            ctx.set_verify(mode, _verify_full)
        else:
            # The callback accepts whatever OpenSSL finds; depth 0 stops OpenSSL building a path above
            # the leaf at all, so it spends no signature checks the engine makes again afterwards. The
            # CertificateVerify check does not depend on it.
            ctx.set_verify_depth(0)
            ctx.set_verify(mode, _verify_proven)
        return ctx

    def remember(self, admission) -> None:
        sessions = self._sessions
        sessions[admission.leaf] = (admission.device_id, admission.path)
        sessions.move_to_end(admission.leaf)
        if len(sessions) > self.settings.resumable:
            sessions.popitem(last=False)

    def resumed(self, leaf: bytes):
        return self._sessions.get(leaf)

    def close_all(self) -> None:
        for protocol in list(self.connections):
            protocol.close()


def _verify_full(conn: SSL.Connection, cert, errnum: int, depth: int, ok: int) -> bool:
    protocol = conn.get_app_data()
    protocol.chain_checked = True
    if not ok and protocol.verify_error is None:
        protocol.verify_error = _VERIFY_CODES.get(errnum, "chain_untrusted")
    return bool(ok)


def _verify_proven(conn: SSL.Connection, cert, errnum: int, depth: int, ok: int) -> bool:
    """``cached`` mode: any chain passes the handshake; possession is still proved by CertificateVerify,
    and the engine judges the chain afterwards."""
    conn.get_app_data().chain_checked = True
    return True


class MqttsProtocol(asyncio.Protocol):
    """One device connection: TLS handshake, CONNECT, CONNACK, then PINGREQ/PUBLISH until DISCONNECT.
    Slotted, and emptied of the handshake's leftovers at CONNACK: a hub holds many of these at once."""

    __slots__ = (
        "buffer",
        "chain",
        "chain_checked",
        "connected",
        "front",
        "handshaken",
        "held",
        "keepalive",
        "last_seen",
        "timer",
        "tls",
        "transport",
        "verified",
        "verify_error",
    )

    def __init__(self, front: MqttsFront):
        self.front = front
        self.transport = None
        self.tls: SSL.Connection | None = None
        self.chain_checked = False  # the verify callback ran: a full handshake, not a resumption
        self.verify_error: str | None = None
        self.handshaken = False
        self.connected = False  # CONNACK 0 sent
        self.buffer = bytearray()
        self.keepalive = 0.0
        self.last_seen = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.chain: list[bytes] = []
        # full mode and resumed sessions: device id, leaf, path, resumed
        self.verified: tuple[str, bytes, tuple[bytes, ...], bool] | None = None
        self.held: str | None = None  # how certstorm_mqtts_connections counts it: handshake, connected

    # -- asyncio ------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.front.connections.add(self)
        self._hold("handshake")
        try:
            self.tls = SSL.Connection(self.front.context(), None)
        except Exception:
            log.exception("cannot make a TLS connection object")
            self._refuse("internal_error")
            return
        self.tls.set_app_data(self)
        self.tls.set_accept_state()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.front.settings.connect_timeout, self._timeout)

    def data_received(self, data: bytes) -> None:
        if self.tls is None:
            return
        try:
            self.tls.bio_write(data)
            if not self.handshaken and not self._handshake():
                return
            self._read_packets()
        except mqtt.MqttError as exc:
            self._refuse(exc.reason)
        except SSL.Error:
            self._refuse("tls_error")
        except Exception:
            log.exception("MQTT/TLS connection failed on the hub's side; closed")
            self._refuse("internal_error")

    def connection_lost(self, exc) -> None:
        self.front.connections.discard(self)
        self._hold(None)
        if self.timer is not None:
            self.timer.cancel()
        if self.tls is not None and not self.connected:
            self.front.hub.metrics.refused("mqtts", "closed_before_connect")
        self.tls = None

    def _hold(self, state: str | None) -> None:
        """Move this connection between the held-connection counts (None: no longer held)."""
        metrics = self.front.hub.metrics
        if self.held == "handshake":
            metrics.mqtts_handshaking -= 1
        elif self.held == "connected":
            metrics.mqtts_connected -= 1
        if state == "handshake":
            metrics.mqtts_handshaking += 1
        elif state == "connected":
            metrics.mqtts_connected += 1
        self.held = state

    # -- TLS ----------------------------------------------------------------------------------------
    def _handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error as exc:
            self._flush()  # the alert
            self._refuse(self.verify_error or _handshake_reason(exc), alert_sent=True)
            return False
        self.handshaken = True
        self._flush()  # Finished / session tickets
        leaf = self.tls.get_peer_certificate()
        if not self.chain_checked:  # resumed: no certificate was validated in this handshake
            self.verified = self._resumed(leaf)
        elif self.front.settings.mode == "full":
            verified = self.tls.get_verified_chain() or []
            device = leaf.get_subject().commonName or ""
            self.verified = (device, _fingerprint(verified[0]), tuple(_fingerprint(c) for c in verified[1:]), False)
        else:
            presented = [leaf, *(self.tls.get_peer_cert_chain() or [])]
            self.chain = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in presented]
        return True

    def _resumed(self, leaf):
        fp = _fingerprint(leaf) if leaf is not None else b""
        known = self.front.resumed(fp)
        return (known[0], fp, known[1], True) if known else None

    def _flush(self) -> None:
        data = outgoing(self.tls)
        if data and self.transport is not None:
            self.transport.write(data)

    def _send(self, data: bytes) -> None:
        self.tls.sendall(data)
        self._flush()

    # -- MQTT ---------------------------------------------------------------------------------------
    def _read_packets(self) -> None:
        while self.tls is not None:
            try:
                self.buffer += self.tls.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                self.close()
                return
        limit = self.front.settings.max_packet
        while self.tls is not None:
            found = mqtt.read_packet(self.buffer, limit)
            if found is None:
                return
            packet, used = found
            del self.buffer[:used]
            self.last_seen = time.monotonic()
            if not self.connected:
                self._connect(mqtt.parse_connect(packet))
            else:
                self._packet(packet)

    def _packet(self, packet: mqtt.Packet) -> None:
        """A packet after CONNACK 0 (a service of the same family serves more kinds)."""
        if packet.kind == mqtt.PINGREQ:
            self._send(mqtt.PINGRESP_PACKET)
        elif packet.kind == mqtt.PUBLISH:
            ack = mqtt.publish_ack(mqtt.parse_publish(packet))
            if ack:
                self._send(ack)
        elif packet.kind == mqtt.DISCONNECT:
            self.close()
        else:
            raise mqtt.MqttError("mqtt_protocol", f"packet type {packet.kind} is not served here")

    def _connect(self, request: mqtt.Connect) -> None:
        if request.level != 4:
            self._refuse("mqtt_protocol_level", connack=mqtt.BAD_PROTOCOL)
            return
        hub = self.front.hub
        if self.verified is not None:
            result = hub.admit_verified(request.client_id, *self.verified)
        elif self.chain:
            result = hub.admit_proven(request.client_id, self.chain)
        else:  # a resumed session this worker no longer (or never) admitted
            self._refuse("session_unknown", connack=mqtt.NOT_AUTHORISED)
            return
        if isinstance(result, TlsRefusal):  # counted by the hub
            code = mqtt.SERVER_UNAVAILABLE if result.throttled else mqtt.NOT_AUTHORISED
            self._refuse(None, connack=code)
            return
        self.front.remember(result)
        self.chain = self.verified = None
        self.connected = True
        self._hold("connected")
        self.keepalive = request.keepalive * 1.5 if request.keepalive else IDLE_TIMEOUT
        self._send(mqtt.encode_connack(mqtt.ACCEPTED))
        self._rearm(self.keepalive)

    # -- ending -------------------------------------------------------------------------------------
    def _rearm(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(delay, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if self.tls is None:
            return
        if self.connected:
            silent = time.monotonic() - self.last_seen
            if silent < self.keepalive:
                self._rearm(self.keepalive - silent)
                return
            self.front.hub.metrics.refused("mqtts", "keepalive_expired")
            self.connected = False  # counted here; not again as closed_before_connect
            self.tls = None
            self.transport.close()
            return
        self._refuse("connect_timeout" if self.handshaken else "handshake_timeout")

    def _refuse(self, reason: str | None, connack: int | None = None, alert_sent: bool = False) -> None:
        """End the connection: CONNACK ``connack`` first if given, then close; ``reason`` is counted
        (None: the hub counted it already)."""
        tls = self.tls
        if tls is None:
            return
        if reason is not None:
            self.front.hub.metrics.refused("mqtts", reason)
        if connack is not None:
            try:
                self._send(mqtt.encode_connack(connack))
            except SSL.Error:
                pass
        self.connected = False
        self.tls = None  # counted: connection_lost must not count it again
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """A clean end (DISCONNECT, close_notify, the worker stopping), with our close_notify."""
        if self.tls is not None:
            if not self.connected:
                self.front.hub.metrics.refused("mqtts", "closed_before_connect")
            try:
                self.tls.shutdown()
                self._flush()
            except SSL.Error:
                pass
        self.connected = True  # nothing more to count
        self.tls = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


def _handshake_reason(exc: SSL.Error) -> str:
    text = str(exc).lower()
    if "peer did not return a certificate" in text or "certificate required" in text:
        return "no_certificate"
    return "tls_handshake_failed"


__all__ = ["IDLE_TIMEOUT", "MODES", "MqttsFront", "MqttsProtocol", "MqttsSettings"]
