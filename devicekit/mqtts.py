"""A device's MQTT-over-mutual-TLS connection, client side: TCP connect, a TLS handshake presenting the
device's own certificate, chain and key (pyOpenSSL), MQTT 3.1.1 CONNECT with client id = device id, and
CONNACK -- each step timed.

pyOpenSSL runs over memory BIOs and the bytes move through an ordinary Python socket: under Locust that
socket is gevent's, so a handshake waiting for the server yields to the other greenlets (pyOpenSSL on a
socket of its own would block the whole process in C). Python's ``ssl`` cannot be used: it takes a client
certificate only from files, one per device.

The server's certificate is verified against ``ca_file`` (with none given it is not verified, like
``openssl s_client`` without ``-verify_return_error``); the server name is sent (SNI) but not matched
against the certificate: pyOpenSSL has no public API for host name checks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from OpenSSL import SSL

from hubsim import mqtt
from hubsim.tlsbio import outgoing

TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
DEFAULT_PORT = 8883


# pause("rtt") or pause("sign"): a simulated device's round trip or signing time, waited by the caller (the
# swarm's --device-profile and --network); None for a device that answers at once.
Pause = Callable[[str], None]


class MqttsFailure(Exception):
    """A connection attempt that failed; ``code`` names it for failure tables (``tcp_refused``,
    ``tls_handshake_failed``, ``connack_5``, ``timeout``...), ``step`` where it failed."""

    def __init__(self, step: str, code: str, message: str = ""):
        super().__init__(f"{step}: {code}" + (f" ({message})" if message else ""))
        self.step, self.code = step, code


@dataclass(frozen=True)
class MqttsTarget:
    host: str
    port: int = DEFAULT_PORT
    ca_file: str | None = None  # the server's CA (PEM); None: the server is not verified
    server_name: str | None = None  # SNI; default: the host when it is a name
    tls_version: str = "1.3"
    username: str | None = None  # template: {device_id}, {hub} (the host)
    keepalive: int = 60
    timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str, **kwargs) -> MqttsTarget:
        parts = urlsplit(url)
        if parts.scheme != "mqtts" or not parts.hostname:
            raise ValueError(f"the broker URL must look like mqtts://host:8883, got {url!r}")
        return cls(parts.hostname, parts.port or DEFAULT_PORT, **kwargs)

    def username_for(self, device_id: str) -> str | None:
        if self.username is None:
            return None
        return self.username.format(device_id=device_id, hub=self.host)


class Timings:
    __slots__ = ("connack", "tcp", "tls")

    def __init__(self):
        self.tcp = self.tls = self.connack = 0.0


class MqttsClient:
    """Connects devices to one target; keeps one TLS context per distinct intermediate chain (a fleet
    has one), so a connection costs a certificate and key load, not a context."""

    def __init__(self, target: MqttsTarget):
        if target.tls_version not in TLS_VERSIONS:
            raise ValueError(f"TLS version must be one of {sorted(TLS_VERSIONS)}, got {target.tls_version!r}")
        self.target = target
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}
        sni = target.server_name
        if sni is None and not _is_address(target.host):
            sni = target.host
        self._sni = sni.encode("idna") if sni else None
        self._address: tuple | None = None  # resolved once: a lookup per connection costs more than TLS

    def _context(self, intermediates: tuple[bytes, ...]) -> SSL.Context:
        ctx = self._contexts.get(intermediates)
        if ctx is None:
            ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
            ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)  # an idle held connection keeps no read or write buffer
            version = TLS_VERSIONS[self.target.tls_version]
            ctx.set_min_proto_version(version)
            ctx.set_max_proto_version(version)
            if self.target.ca_file:
                ctx.load_verify_locations(self.target.ca_file)
                ctx.set_verify(SSL.VERIFY_PEER, None)
            else:
                ctx.set_verify(SSL.VERIFY_NONE, None)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)  # a resumed session comes from get_session(), not a cache
            for der in intermediates:
                ctx.add_extra_chain_cert(x509.load_der_x509_certificate(der))
            self._contexts[intermediates] = ctx
        return ctx

    def open(
        self,
        chain: list[bytes],
        key,
        *,
        session: SSL.Session | None = None,
        source: str | None = None,
        pause: Pause | None = None,
    ) -> MqttsConnection:
        """TCP connect and TLS handshake, presenting ``chain`` (leaf first, DER) and ``key``; no MQTT yet.
        Raises MqttsFailure. ``pause`` (see :data:`Pause`) waits a simulated device's round trips and signing."""
        timings = Timings()
        t0 = time.perf_counter()
        if pause is not None:
            pause("rtt")  # SYN, SYN-ACK
        try:
            sock = self._connect(source)
        except TimeoutError:
            raise MqttsFailure("tcp", "timeout") from None
        except ConnectionRefusedError:
            raise MqttsFailure("tcp", "tcp_refused") from None
        except OSError as exc:
            raise MqttsFailure("tcp", "tcp_error", str(exc)) from None
        t1 = time.perf_counter()
        timings.tcp = t1 - t0
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = SSL.Connection(self._context(tuple(chain[1:])), None)
            tls.use_certificate(x509.load_der_x509_certificate(chain[0]))
            tls.use_privatekey(key)
            if self._sni:
                tls.set_tlsext_host_name(self._sni)
            if session is not None:
                tls.set_session(session)  # ValueError for a session of another client: a caller's bug
            tls.set_connect_state()
            connection = MqttsConnection(sock, tls, timings)
            # a device that offers a session to resume signs nothing in the handshake
            connection.handshake(pause if session is None or pause is None else _no_signing(pause))
        except BaseException:
            sock.close()
            raise
        timings.tls = time.perf_counter() - t1
        return connection

    def _connect(self, source: str | None) -> socket.socket:
        target = self.target
        if self._address is None:
            family, _, _, _, address = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)[0]
            self._address = (family, address)
        family, address = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(target.timeout)
            if source:
                sock.bind((source, 0))
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(
        self,
        device_id: str,
        chain: list[bytes],
        key,
        *,
        session: SSL.Session | None = None,
        source: str | None = None,
        client_id: str | None = None,
        pause: Pause | None = None,
    ) -> MqttsConnection:
        """Connect one device and wait for CONNACK 0: :meth:`open`, then CONNECT with ``client_id``
        (default: the device id). Raises MqttsFailure."""
        connection = self.open(chain, key, session=session, source=source, pause=pause)
        t2 = time.perf_counter()
        try:
            connection.send(
                mqtt.encode_connect(
                    client_id or device_id,
                    username=self.target.username_for(device_id),
                    keepalive=self.target.keepalive,
                )
            )
            if pause is not None:
                pause("rtt")  # CONNECT out, CONNACK back
            code = mqtt.parse_connack(connection.read_packet("connack"))
        except mqtt.MqttError as exc:
            connection.close(disconnect=False)
            raise MqttsFailure("connack", exc.reason, str(exc)) from None
        except BaseException:
            connection.close(disconnect=False)
            raise
        connection.timings.connack = time.perf_counter() - t2
        if code != mqtt.ACCEPTED:
            connection.close(disconnect=False)
            raise MqttsFailure("connack", f"connack_{code}")
        return connection


class MqttsConnection:
    """An admitted device's open connection."""

    __slots__ = ("_buffer", "sock", "timings", "tls")

    def __init__(self, sock: socket.socket, tls: SSL.Connection, timings: Timings):
        self.sock, self.tls, self.timings = sock, tls, timings
        self._buffer = bytearray()

    def _flush(self) -> None:
        data = outgoing(self.tls)
        if data:
            self.sock.sendall(data)

    def _receive(self, step: str) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise MqttsFailure(step, "timeout") from None
        except OSError as exc:
            raise MqttsFailure(step, "connection_reset", str(exc)) from None
        if not data:
            raise MqttsFailure(step, "closed_by_server")
        self.tls.bio_write(data)

    def handshake(self, pause: Pause | None = None) -> None:
        """The TLS handshake; with ``pause``, the round trip before the server's flight is read and the
        device's signing time before the client answers it (its CertificateVerify)."""
        flights = 0
        while True:
            try:
                self.tls.do_handshake()
            except SSL.WantReadError:
                try:
                    self._flush()
                except OSError as exc:
                    raise MqttsFailure("tls", "connection_reset", str(exc)) from None
                if pause is not None and flights == 0:
                    pause("rtt")  # ClientHello out, the server's flight back
                self._receive("tls")
                if pause is not None and flights == 0:
                    pause("sign")  # the device signs before it answers
                flights += 1
                continue
            except SSL.Error as exc:
                raise MqttsFailure("tls", "tls_handshake_failed", str(exc)) from None
            self._flush()
            return

    def send(self, data: bytes) -> None:
        try:
            self.tls.sendall(data)
            self._flush()
        except (SSL.Error, OSError) as exc:
            raise MqttsFailure("mqtt", "connection_reset", str(exc)) from None

    def read_packet(self, step: str) -> mqtt.Packet:
        """The next MQTT packet from the server. A TLS 1.3 server's refusal of the client certificate
        arrives as an alert after the client's handshake finished: it surfaces here, as a TLS failure."""
        while True:
            found = mqtt.read_packet(self._buffer, 1 << 20)
            if found is not None:
                packet, used = found
                del self._buffer[:used]
                return packet
            try:
                self._buffer += self.tls.recv(65536)
                continue
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                raise MqttsFailure(step, "closed_by_server") from None
            except SSL.Error as exc:
                raise MqttsFailure("tls", "tls_handshake_failed", str(exc)) from None
            self._receive(step)

    def receive(self, step: str = "read") -> bytes:
        """Application bytes the server sent (waiting for some); b"" once it closed the connection."""
        while True:
            try:
                return self.tls.recv(65536)
            except SSL.WantReadError:
                pass
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""
            except SSL.Error as exc:
                raise MqttsFailure("tls", "tls_handshake_failed", str(exc)) from None
            try:
                self._receive(step)
            except MqttsFailure as exc:
                if exc.code == "closed_by_server":
                    return b""
                raise

    def ping(self) -> None:
        """PINGREQ, then wait for PINGRESP."""
        self.send(mqtt.PINGREQ_PACKET)
        packet = self.read_packet("ping")
        if packet.kind != mqtt.PINGRESP:
            raise MqttsFailure("ping", "mqtt_protocol", f"packet type {packet.kind} instead of PINGRESP")

    def session(self) -> SSL.Session | None:
        """The TLS session to resume on the next connection (TLS 1.3: the ticket that came before CONNACK)."""
        return self.tls.get_session()

    def close(self, disconnect: bool = True) -> None:
        """End the connection; with ``disconnect``, cleanly: MQTT DISCONNECT, then TLS close_notify --
        which also keeps the session resumable (OpenSSL drops the session of a connection freed
        without it)."""
        try:
            if disconnect:
                self.tls.sendall(mqtt.DISCONNECT_PACKET)
                self.tls.shutdown()
                self._flush()
        except (SSL.Error, OSError):
            pass
        finally:
            self.sock.close()


def _no_signing(pause: Pause) -> Pause:
    return lambda kind: None if kind == "sign" else pause(kind)


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


__all__ = [
    "DEFAULT_PORT",
    "TLS_VERSIONS",
    "MqttsClient",
    "MqttsConnection",
    "MqttsFailure",
    "MqttsTarget",
    "Pause",
    "Timings",
]
