"""The few MQTT 3.1.1 packets a device connection needs (OASIS MQTT 3.1.1, section 2 and 3): CONNECT,
CONNACK, PUBLISH (acknowledged at QoS 1), SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK, PINGREQ/PINGRESP and
DISCONNECT. Used by the hub's and DPS's TLS listeners, the device clients and the swarm; pure functions
over bytes, no I/O.

No MQTT library is used: the Python clients (paho-mqtt and others) own their sockets and threads, which
fits neither the hub's event loop with pyOpenSSL memory BIOs nor the swarm's gevent greenlets, and these
packets are a few lines each.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 12, 13, 14
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ_PACKET = b"\xc0\x00"
PINGRESP_PACKET = b"\xd0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# CONNACK return codes (3.2.2.3)
ACCEPTED, BAD_PROTOCOL, IDENTIFIER_REJECTED, SERVER_UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORISED = range(6)


class MqttError(ValueError):
    """A packet this side cannot accept; ``reason`` is a stable label (metrics, failure names)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Packet(NamedTuple):
    kind: int  # the control packet type (1..14)
    flags: int  # the low nibble of the first byte
    body: bytes  # variable header and payload


class Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    packet_id: bytes | None  # two bytes at QoS 1 and 2


class Connect(NamedTuple):
    client_id: str
    username: str | None
    keepalive: int  # seconds; 0 = none
    level: int  # protocol level (4 = 3.1.1)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings hold at most 65,535 bytes")
    return struct.pack("!H", len(data)) + data


def encode_connect(client_id: str, *, username: str | None = None, keepalive: int = 60) -> bytes:
    """A clean-session CONNECT (3.1) with client id, optional username, no password or will."""
    flags = 0x02 | (0x80 if username is not None else 0)
    body = _string("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
    return bytes((CONNECT << 4,)) + _remaining_length(len(body)) + body


def encode_connack(code: int) -> bytes:
    return bytes((CONNACK << 4, 2, 0, code))


def encode_puback(packet_id: bytes) -> bytes:
    return bytes((PUBACK << 4, 2)) + packet_id


def read_packet(buffer: bytes | bytearray, max_size: int) -> tuple[Packet, int] | None:
    """The first whole packet in ``buffer`` and the bytes it took, or None if more bytes are needed.
    Raises MqttError for a malformed remaining length or a packet above ``max_size`` bytes -- before
    its body has arrived, so an announced giant is refused without being buffered."""
    if len(buffer) < 2:
        return None
    length, multiplier, pos = 0, 1, 1
    while True:
        if pos >= len(buffer):
            return None
        if pos > 4:
            raise MqttError("mqtt_malformed", "remaining length longer than four bytes")
        byte = buffer[pos]
        length += (byte & 0x7F) * multiplier
        multiplier <<= 7
        pos += 1
        if not byte & 0x80:
            break
    if pos + length > max_size:
        raise MqttError("mqtt_oversized", f"a packet of {pos + length} bytes exceeds the limit of {max_size}")
    if len(buffer) < pos + length:
        return None
    first = buffer[0]
    return Packet(first >> 4, first & 0x0F, bytes(buffer[pos : pos + length])), pos + length


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MqttError("mqtt_malformed", "packet ends inside a field")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self) -> str:
        (size,) = struct.unpack("!H", self.take(2))
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise MqttError("mqtt_malformed", "a string field is not UTF-8") from None


def parse_connect(packet: Packet) -> Connect:
    """The fields of a CONNECT packet; MqttError for anything 3.1.1 forbids that matters here."""
    if packet.kind != CONNECT:
        raise MqttError("mqtt_protocol", "the first packet of a connection must be CONNECT")
    if packet.flags:
        raise MqttError("mqtt_malformed", "CONNECT with reserved flags set")
    reader = _Reader(packet.body)
    name = reader.string()
    level, flags = reader.take(2)
    (keepalive,) = struct.unpack("!H", reader.take(2))
    if name != "MQTT" and not (name == "MQIsdp" and level == 3):
        raise MqttError("mqtt_protocol", f"protocol name {name!r} is not MQTT")
    if flags & 0x01:
        raise MqttError("mqtt_malformed", "CONNECT reserved flag set")
    client_id = reader.string()
    if flags & 0x04:  # will topic and message
        reader.string()
        reader.take(struct.unpack("!H", reader.take(2))[0])
    username = reader.string() if flags & 0x80 else None
    if flags & 0x40:
        reader.take(struct.unpack("!H", reader.take(2))[0])
    if reader.pos != len(packet.body):
        raise MqttError("mqtt_malformed", "bytes after the CONNECT payload")
    return Connect(client_id, username, keepalive, level)


def publish_ack(publish: Publish) -> bytes | None:
    """What a broker answers to a PUBLISH it accepts: PUBACK at QoS 1, nothing at QoS 0. QoS 2 raises
    MqttError (this side does not store messages)."""
    if publish.qos == 2:
        raise MqttError("mqtt_protocol", "PUBLISH at QoS 2 is not supported")
    return encode_puback(publish.packet_id) if publish.qos == 1 else None


def parse_publish(packet: Packet) -> Publish:
    """Topic, payload, QoS and packet id of a PUBLISH; MqttError for QoS 3 or a cut-short packet."""
    if packet.kind != PUBLISH:
        raise MqttError("mqtt_protocol", f"expected PUBLISH, got packet type {packet.kind}")
    qos = (packet.flags >> 1) & 0x03
    if qos == 3:
        raise MqttError("mqtt_malformed", "PUBLISH with QoS 3")
    reader = _Reader(packet.body)
    topic = reader.string()
    packet_id = reader.take(2) if qos else None
    return Publish(topic, packet.body[reader.pos :], qos, packet_id)


def encode_publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    """A PUBLISH (no DUP, no RETAIN) at QoS 0 or 1."""
    if qos not in (0, 1):
        raise ValueError("this side publishes at QoS 0 or 1")
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes(((PUBLISH << 4) | (qos << 1),)) + _remaining_length(len(body)) + body


def encode_subscribe(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes((q,)) for t, q in topics)
    return bytes(((SUBSCRIBE << 4) | 0x02,)) + _remaining_length(len(body)) + body


def parse_subscribe(packet: Packet) -> tuple[bytes, list[tuple[str, int]]]:
    """(packet id, [(topic filter, requested QoS)]) of a SUBSCRIBE or, with QoS 0 throughout, an
    UNSUBSCRIBE (whose filters carry no QoS byte)."""
    if packet.kind not in (SUBSCRIBE, UNSUBSCRIBE) or packet.flags != 0x02:
        raise MqttError("mqtt_malformed", "SUBSCRIBE/UNSUBSCRIBE with wrong fixed-header flags")
    reader = _Reader(packet.body)
    packet_id = reader.take(2)
    topics = []
    while reader.pos < len(packet.body):
        topic = reader.string()
        qos = 0
        if packet.kind == SUBSCRIBE:
            qos = reader.take(1)[0]
            if qos > 2:
                raise MqttError("mqtt_malformed", "SUBSCRIBE asks for QoS above 2")
        topics.append((topic, qos))
    if not topics:
        raise MqttError("mqtt_malformed", "SUBSCRIBE/UNSUBSCRIBE without a topic filter")
    return packet_id, topics


def encode_suback(packet_id: bytes, codes: list[int]) -> bytes:
    body = bytes(packet_id) + bytes(codes)
    return bytes((SUBACK << 4,)) + _remaining_length(len(body)) + body


def encode_unsuback(packet_id: bytes) -> bytes:
    return bytes((UNSUBACK << 4, 2)) + bytes(packet_id)


def parse_suback(packet: Packet) -> tuple[int, list[int]]:
    """(packet id, return codes) of a SUBACK; 0x80 in the codes is a refused filter."""
    if packet.kind != SUBACK or len(packet.body) < 3:
        raise MqttError("mqtt_protocol", f"expected SUBACK, got packet type {packet.kind}")
    return struct.unpack("!H", packet.body[:2])[0], list(packet.body[2:])


def parse_connack(packet: Packet) -> int:
    """The return code of a CONNACK."""
    if packet.kind != CONNACK or len(packet.body) != 2:
        raise MqttError("mqtt_protocol", f"expected CONNACK, got packet type {packet.kind}")
    return packet.body[1]


__all__ = [
    "DISCONNECT_PACKET",
    "PINGREQ_PACKET",
    "PINGRESP_PACKET",
    "Connect",
    "MqttError",
    "Packet",
    "Publish",
    "encode_connack",
    "encode_connect",
    "encode_puback",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "parse_connack",
    "parse_connect",
    "parse_publish",
    "parse_suback",
    "parse_subscribe",
    "publish_ack",
    "read_packet",
]
