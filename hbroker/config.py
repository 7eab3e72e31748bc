"""Configuration: one TOML file parsed once into typed, frozen dataclasses and validated here.

Nothing else in hbroker reads TOML. Every option carries its documentation and whether SIGHUP
applies it (`field(metadata=...)`), so `docs/configuration.md` and `examples/hbroker.toml` are
generated from this schema (`tools/gen_config_docs.py`) and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import socket
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """A configuration problem; the message names the file, the key and what was expected."""


def opt(default: Any, doc: str, *, reload: bool = False, choices: tuple = (),
        minimum: float | None = None, maximum: float | None = None,
        secret: bool = False) -> Any:
    """A configuration option. `secret`: its value is shown as `<redacted>` where the
    effective configuration is printed (`hbroker check-config`)."""
    return field(default=default, metadata={
        "doc": doc, "reload": reload, "choices": choices, "min": minimum, "max": maximum,
        "secret": secret})


LISTENER_TYPES = ("tcp", "tls", "ws", "wss", "unix")
TLS_TYPES = ("tls", "wss")
WEBSOCKET_TYPES = ("ws", "wss")
PROTOCOL_VERSIONS = (3, 4, 5)
CLUSTER_BACKENDS = ("nats",)
CLUSTER_URL_SCHEMES = ("nats", "tls")
# The authentication sources a listener may restrict itself to (`ListenerConfig.auth`).
AUTH_SOURCES = ("password_file", "webhook", "scram")
DEFAULT_WEBSOCKET_PATH = "/mqtt"


def is_web_origin(text: str) -> bool:
    """Whether `text` is a serialised web origin, `scheme://host[:port]` (RFC 6454)."""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme.isascii() or not scheme[:1].isalpha() \
            or not all(c.isalnum() or c in "+-." for c in scheme) or not rest \
            or any(c in rest for c in "/?#@ "):
        return False
    host, _, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if not host:
        host, port = rest, ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(host)


def is_loopback(host: str) -> bool:
    """Whether `host` names only the machine itself (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    type: str = opt("tcp", "Transport of the listener: `tcp` (plain MQTT), `tls` (MQTT over "
                    "TLS), `ws` (MQTT over WebSocket), `wss` (MQTT over WebSocket over TLS) or "
                    "`unix` (a Unix-domain socket, see `path` and `mode`).",
                    choices=LISTENER_TYPES)
    host: str = opt("127.0.0.1", "Address to listen on (`0.0.0.0` for every IPv4 address, "
                    "`::` for IPv6). Not used by `unix` listeners.")
    port: int = opt(1883, "TCP port; 0 picks any free port (useful in tests). Not used by "
                    "`unix` listeners.", minimum=0, maximum=65535)
    name: str = opt("", "Label used in logs and given to hooks; empty means `TYPE://HOST:PORT` "
                    "(`unix://PATH`).")
    path: str = opt("", "`unix`: the socket file (required); a stale socket file is replaced "
                    "and the file is removed when the broker stops. `ws`/`wss`: the HTTP path "
                    "of the WebSocket endpoint; empty means `/mqtt`.")
    mode: str = opt("0660", "`unix`: permission bits of the socket file, in octal (who may "
                    "connect).")
    allowed_origins: tuple[str, ...] = opt((), "`ws`/`wss`: the web origins whose pages may "
                                           "open a WebSocket to this listener, as "
                                           "`scheme://host[:port]` (e.g. "
                                           "`https://app.example.com`); `*` allows every "
                                           "origin. Empty: only pages of the listener's own "
                                           "origin (an `Origin` header whose host and port are "
                                           "the request's `Host`). Browsers always send "
                                           "`Origin`; a request without one (not a browser) "
                                           "is not checked. A refused upgrade gets HTTP 403, "
                                           "logged with the origin and the listener.")
    max_connections: int = opt(0, "Most simultaneous connections on this listener; further "
                               "connections are closed at once. 0: only `limits."
                               "max_connections` applies.", minimum=0)
    protocol_versions: tuple[int, ...] = opt(PROTOCOL_VERSIONS, "MQTT protocol levels "
                                             "accepted: 3 (3.1), 4 (3.1.1), 5 (5.0). A client "
                                             "of another version is refused with CONNACK "
                                             "0x01 (3.1/3.1.1) or 0x84 (5.0).")
    allow_anonymous: bool | None = opt(None, "Accept clients that no authentication source "
                                       "vouches for: clients that give no username, and "
                                       "clients whose username no source of this listener "
                                       "checks. With `false`, a client is admitted only when "
                                       "a source accepted it (a password file, the webhook, "
                                       "SCRAM, or its certificate with "
                                       "`use_identity_as_username`), and a listener without "
                                       "any such source is a configuration error. Unset: "
                                       "`true` on `unix` listeners and on loopback addresses, "
                                       "`false` on every other listener. A refused client gets "
                                       "CONNACK 0x05 (3.1.1) or 0x87 (5.0).")
    certfile: str = opt("", "`tls`/`wss`: PEM file with the server certificate (and its chain). "
                        "Required. Re-read on SIGHUP.")
    keyfile: str = opt("", "`tls`/`wss`: PEM file with the private key of `certfile`. "
                       "Required. Re-read on SIGHUP.")
    cafile: str = opt("", "`tls`/`wss`: PEM file of the certificate authorities that client "
                      "certificates must chain to. Empty: clients are not asked for a "
                      "certificate. Re-read on SIGHUP.")
    crlfile: str = opt("", "`tls`/`wss`: PEM certificate revocation list of `cafile`'s "
                       "authority; a revoked client certificate fails the handshake. Needs "
                       "`cafile`. Re-read on SIGHUP.")
    require_certificate: bool = opt(False, "`tls`/`wss`: refuse clients without a valid "
                                    "certificate (mutual TLS). Needs `cafile`. With `false` and "
                                    "a `cafile`, a certificate is asked for but optional (an "
                                    "invalid one still fails the handshake).")
    certificate_identity: str = opt("cn", "`tls`/`wss`: which part of a client certificate "
                                    "names the client: `cn` (subject common name), `san_dns` "
                                    "or `san_email` (first DNS name or e-mail address of the "
                                    "subject alternative names). Given to hooks as "
                                    "`ClientInfo.certificate_identity`.",
                                    choices=("cn", "san_dns", "san_email"))
    use_identity_as_username: bool = opt(False, "`tls`/`wss`: the certificate identity "
                                         "becomes the client's username, replacing the one in "
                                         "CONNECT (Mosquitto's option). A client without a "
                                         "certificate, or whose certificate lacks that "
                                         "identity, is refused (0x05 / 0x87). Needs `cafile`.")
    tls_version: str = opt("1.2", "`tls`/`wss`: lowest TLS version accepted.",
                           choices=("1.2", "1.3"))
    ciphers: str = opt("", "`tls`/`wss`: OpenSSL cipher list for TLS 1.2 (e.g. "
                       "`ECDHE+AESGCM`); empty keeps Python's secure default. TLS 1.3 suites "
                       "are OpenSSL's.")
    password_file: str = opt("", "Password file for the clients of this listener, in place of "
                             "`auth.password_file` (Mosquitto's per-listener `password_file`); "
                             "its SCRAM keys serve `auth.scram` on this listener too. Empty: "
                             "`auth.password_file` applies. Re-read on SIGHUP (a new file name "
                             "needs a restart).")
    auth: tuple[str, ...] = opt(AUTH_SOURCES, "Authentication sources that apply to this "
                                "listener's clients, among those configured in `[auth]`: "
                                "`password_file` (this listener's or `auth.password_file`), "
                                "`webhook` (`auth.webhook_url`), `scram` (`auth.scram`). "
                                "Every source listed must be configured; the default list "
                                "means every configured source. `[]` checks no username (for "
                                "listeners with `allow_anonymous` or certificate identities "
                                "only). Clients authenticated by `use_identity_as_username` "
                                "are never asked for a password.", choices=AUTH_SOURCES)

    def __post_init__(self) -> None:
        if self.allow_anonymous is None:
            local = self.type == "unix" or is_loopback(self.host)
            object.__setattr__(self, "allow_anonymous", local)
        if self.type in WEBSOCKET_TYPES and not self.path:
            object.__setattr__(self, "path", DEFAULT_WEBSOCKET_PATH)
        object.__setattr__(self, "protocol_versions", tuple(self.protocol_versions))
        object.__setattr__(self, "auth", tuple(self.auth))
        object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))

    @property
    def label(self) -> str:
        """The listener's name in logs: `name`, or its type and address."""
        if self.name:
            return self.name
        if self.type == "unix":
            return f"unix://{self.path}"
        return f"{self.type}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_connections: int = opt(10000, "Most simultaneous network connections; further "
                               "connections are closed at once.", reload=True, minimum=1)
    max_packet_size: int = opt(1048576, "Largest packet accepted from a client once its "
                               "CONNECT is accepted, in bytes (fixed header included); 1 MiB, "
                               "as EMQX. A larger packet closes the connection (5.0: "
                               "DISCONNECT 0x95). Sent to 5.0 clients as Maximum Packet Size "
                               "when below the protocol maximum (268435460). Applies to new "
                               "connections.", reload=True, minimum=16, maximum=268435460)
    max_connect_packet_size: int = opt(16384, "Largest CONNECT accepted, in bytes (fixed "
                                       "header included; at most `max_packet_size`), and the "
                                       "most a client can make the broker hold before its "
                                       "CONNECT is accepted: what it sends after the CONNECT "
                                       "ahead of the CONNACK (held until the CONNECT is "
                                       "decided, then handled in order) and the AUTH packets "
                                       "of enhanced authentication share this limit with the "
                                       "CONNECT. Over it: CONNACK 0x95 (Packet too large) to a "
                                       "5.0 client, and the connection is closed (3.1.1 has no "
                                       "return code for it). With `max_connections` = 10000, "
                                       "connections that are not (yet) authenticated hold at "
                                       "most 10000 × 16 KiB (156 MiB) at the default. Applies "
                                       "to new connections.", reload=True, minimum=16,
                                       maximum=268435460)
    max_inflight: int = opt(20, "Unacknowledged QoS 1/2 messages per client: the Receive "
                            "Maximum announced to 5.0 clients (incoming QoS 2 awaiting "
                            "PUBREL; one more is DISCONNECT 0x93) and the outgoing window for "
                            "3.1.1 clients, re-sends on a resumed session included (5.0 "
                            "clients state their own). 3.1.1 has no Receive Maximum, "
                            "so a 3.1.1 client's incoming QoS 2 messages are bounded only by "
                            "the packet id space: at most 65,535 awaiting PUBREL per session.",
                            reload=True, minimum=1, maximum=65535)
    max_queued_messages: int = opt(1000, "Messages queued per session while the client is "
                                   "offline or its window is full; further messages are dropped "
                                   "and counted.", reload=True, minimum=0)
    max_queued_bytes: int = opt(16777216, "Payload bytes queued per session (same rule as "
                                "max_queued_messages). Also the bound on QoS 0 bytes buffered "
                                "for a slow reader before QoS 0 messages are dropped.",
                                reload=True, minimum=0)
    max_keepalive: int = opt(65535, "Largest keep alive granted, in seconds. A 5.0 client "
                             "asking for more (or for 0 while this is below 65535) is given "
                             "this value through Server Keep Alive; 3.1.1 clients cannot be "
                             "told and keep their own value.", reload=True, minimum=1,
                             maximum=65535)
    max_qos: int = opt(2, "Maximum QoS: subscriptions are granted at most this QoS; a 5.0 "
                       "client publishing above it is disconnected with 0x9B.", reload=True,
                       minimum=0, maximum=2)
    retain_available: bool = opt(True, "Whether retained messages are supported (Retain "
                                 "Available).", reload=True)
    wildcard_subscription_available: bool = opt(True, "Whether `+` and `#` may be used in "
                                                "subscriptions.", reload=True)
    shared_subscription_available: bool = opt(True, "Whether `$share/<group>/<filter>` "
                                              "subscriptions are supported.", reload=True)
    subscription_identifier_available: bool = opt(True, "Whether 5.0 Subscription Identifiers "
                                                  "are supported.", reload=True)
    topic_alias_maximum: int = opt(10, "Topic aliases a 5.0 client may use towards the broker "
                                   "(Topic Alias Maximum); 0 disables them.", reload=True,
                                   minimum=0, maximum=65535)
    connect_timeout: float = opt(10.0, "Seconds a new connection may stay open without sending "
                                 "CONNECT.", reload=True, minimum=0.1)


PUBLISH_RATE_ACTIONS = ("refuse", "throttle", "disconnect")


@dataclass(frozen=True, slots=True)
class QuotasConfig:
    max_connection_rate: float = opt(0.0, "New connections accepted per second from one source "
                                     "address (IP), a token bucket refilled at this rate. A "
                                     "connection over it is closed at once, before any MQTT "
                                     "packet, and counted; the address is logged at most once "
                                     "every 10 seconds. 0: no limit. Not applied to `unix` "
                                     "listeners.", reload=True, minimum=0)
    connection_rate_burst: int = opt(0, "Connections one address may open at once before "
                                     "`max_connection_rate` applies (the bucket's size). 0: "
                                     "the rate rounded up, at least 1.", reload=True, minimum=0)
    max_publish_rate: float = opt(0.0, "PUBLISH packets per second one client may send (a "
                                  "token bucket per connection). What a client over it sees "
                                  "is set by `publish_rate_action`. 0: no limit. Applies to "
                                  "connections made after a reload.", reload=True, minimum=0)
    publish_rate_burst: int = opt(0, "PUBLISH packets a client may send at once before "
                                  "`max_publish_rate` applies. 0: the rate rounded up, at "
                                  "least 1.", reload=True, minimum=0)
    max_publish_bytes_rate: float = opt(0.0, "Payload bytes per second one client may publish "
                                        "(a second token bucket; same actions as "
                                        "`max_publish_rate`). 0: no limit. Applies to "
                                        "connections made after a reload.", reload=True,
                                        minimum=0)
    publish_bytes_burst: int = opt(0, "Payload bytes a client may publish at once before "
                                   "`max_publish_bytes_rate` applies. 0: the rate rounded up. "
                                   "A single message larger than the burst passes when the "
                                   "bucket is full and leaves it in debt.", reload=True,
                                   minimum=0)
    publish_rate_action: str = opt("refuse", "A PUBLISH over a publish rate: `refuse`: a 5.0 "
                                   "client's QoS 1/2 message gets PUBACK/PUBREC 0x97 (Quota "
                                   "exceeded) and is not routed, its QoS 0 message is dropped "
                                   "and counted; a 3.1.1 client, which cannot be told, is "
                                   "throttled instead. `throttle`: every client is throttled: "
                                   "its message is accepted and the broker stops reading from "
                                   "its socket until its bucket is out of debt (backpressure; "
                                   "nothing is refused or lost). `disconnect`: the message is "
                                   "not routed and the connection is closed (5.0: DISCONNECT "
                                   "0x96 Message rate too high).", reload=True,
                                   choices=PUBLISH_RATE_ACTIONS)
    max_subscriptions: int = opt(0, "Subscriptions one session may hold; a SUBSCRIBE beyond "
                                 "it gets 0x97 (Quota exceeded, 5.0) or 0x80 (3.1.1) for each "
                                 "filter over the limit (re-subscribing an existing filter "
                                 "always succeeds). 0: no limit.", reload=True, minimum=0)
    max_topic_levels: int = opt(128, "Most levels (`/`-separated parts) in a PUBLISH topic "
                                "name or a SUBSCRIBE topic filter (without its `$share/GROUP/` "
                                "prefix). Over it: PUBLISH is refused with 0x90 (Topic Name "
                                "invalid), SUBSCRIBE with 0x8F (Topic Filter invalid) or 0x80 "
                                "(3.1.1).", reload=True, minimum=1, maximum=32768)
    max_topic_length: int = opt(65535, "Longest PUBLISH topic name or SUBSCRIBE topic filter, "
                                "in characters; same refusals as `max_topic_levels`. 65535: "
                                "only the protocol's own limit.", reload=True, minimum=1,
                                maximum=65535)


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    max_session_expiry_interval: int = opt(4294967295, "Cap on the Session Expiry Interval a "
                                           "5.0 client may ask for, in seconds; 4294967295 "
                                           "means sessions may never expire.", reload=True,
                                           minimum=0, maximum=4294967295)
    persistent_client_expiration: int = opt(0, "Seconds an idle 3.1.1 persistent session "
                                            "(clean session 0) is kept after its client "
                                            "disconnects; 0 keeps it forever (Mosquitto's "
                                            "option of the same name).", reload=True,
                                            minimum=0, maximum=4294967295)
    queue_qos0_messages: bool = opt(False, "Queue QoS 0 messages for offline persistent "
                                    "sessions too (Mosquitto's option of the same name).",
                                    reload=True)
    allow_zero_length_client_id: bool = opt(True, "Accept an empty client id and assign one "
                                            "(5.0: returned as Assigned Client Identifier; "
                                            "3.1.1: only with clean session 1).", reload=True)
    max_client_id_length: int = opt(65535, "Longest client id accepted, in characters.",
                                    reload=True, minimum=1, maximum=65535)


@dataclass(frozen=True, slots=True)
class SysConfig:
    enabled: bool = opt(True, "Publish broker statistics under `$SYS/broker/...` (Mosquitto's "
                        "topic names), as retained messages.")
    interval: int = opt(10, "Seconds between `$SYS` updates (each value is published only when "
                        "it changed).", reload=True, minimum=1, maximum=86400)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = opt("info", "Least severe level logged.", reload=True,
                     choices=("debug", "info", "warning", "error"))
    format: str = opt("text", "`text`: one human-readable line per event; `json`: one JSON "
                      "object per line. `--log-format` on the command line overrides it.",
                      choices=("text", "json"))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = opt("sqlite", "Where broker state lives: `sqlite` (a file, the default), "
                       "`postgres` (a PostgreSQL server) or `memory` (nothing survives a "
                       "restart). Retained messages, persistent sessions with their "
                       "subscriptions, queued and inflight messages are stored.",
                       choices=("sqlite", "postgres", "memory"))
    path: str = opt("data/hbroker.db", "SQLite database file, relative to the working "
                    "directory; its directory is created if missing.")
    dsn: str = opt("", "PostgreSQL connection string for `backend = \"postgres\"`, e.g. "
                   "`postgresql://hbroker:secret@db.example:5432/hbroker`.")
    mode: str = opt("sync", "`sync`: a QoS 1/2 PUBLISH is acknowledged (PUBACK/PUBREC) only "
                    "after the message, its retained update and its queued deliveries are "
                    "committed; commits are grouped so throughput holds. `periodic`: changes "
                    "are committed every `flush_interval_ms`; acknowledgements do not wait, so "
                    "a crash loses what was acknowledged in the last interval (fewer writes, "
                    "for flash-wear-sensitive gateways).", choices=("sync", "periodic"))
    flush_interval_ms: int = opt(1000, "In `periodic` mode, milliseconds between commits: "
                                 "the most a crash can lose.", minimum=1, maximum=3600000)
    fsync: bool = opt(False, "Wait for every commit to reach the disk before acknowledging "
                      "(SQLite `synchronous=FULL`; PostgreSQL `synchronous_commit=on`). With "
                      "`false` a commit is in the operating system's (or the database "
                      "server's) hands when the broker acknowledges: a crash of the broker, "
                      "even `kill -9`, loses nothing, but a power loss or a crash of the "
                      "operating system (or of the PostgreSQL server) can lose the last "
                      "seconds of commits. Set `true` on gateways that lose power; it costs "
                      "one disk flush per group commit (see bench/RESULTS.md).")
    max_size: int = opt(0, "SQLite: largest database size in bytes (0: no limit). When it is "
                        "reached the broker stops acknowledging what it cannot store (5.0 "
                        "clients get 0x97 Quota exceeded) until space is freed.", minimum=0)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    password_file: str = opt("", "Password file (`user:hash` lines, managed with `hbroker passwd "
                             "add|delete|list FILE USER`): a client giving a username must give "
                             "its password (wrong or unknown: CONNACK 0x86 in 5.0, 0x04 in "
                             "3.1.1). Empty: usernames are not checked against a file. Whether "
                             "clients without a username are accepted is each listener's "
                             "`allow_anonymous`. A listener's own `password_file` replaces "
                             "it for that listener's clients. Re-read on SIGHUP.", reload=True)
    scram: bool = opt(False, "Offer MQTT 5.0 enhanced authentication with `SCRAM-SHA-256` "
                      "(Authentication Method in CONNECT), for the users of `password_file` "
                      "whose entry holds SCRAM keys (`hbroker passwd add --scram`). Needs "
                      "`password_file` (or a listener's own).", reload=True)
    webhook_url: str = opt("", "HTTP(S) URL that decides CONNECTs: the broker POSTs JSON "
                           "`{username, password, client_id, peer, listener}` and accepts the "
                           "client on a 2xx answer, refuses it (0x86 / 0x04) on any other "
                           "answer, and with 0x88 Server unavailable (0x03) when the webhook "
                           "cannot be reached in time. With `password_file` too, both must accept. "
                           "Empty: no webhook.", reload=True)
    webhook_timeout: float = opt(5.0, "Seconds the webhook may take to answer.", reload=True,
                                 minimum=0.1, maximum=60)
    webhook_cache_seconds: float = opt(60.0, "Seconds a webhook answer is reused for the same "
                                       "username, password, client id, listener and peer "
                                       "address; 0 asks every time. Failures to reach the "
                                       "webhook are not cached.", reload=True, minimum=0,
                                       maximum=86400)
    failure_delay: float = opt(1.0, "Seconds the answer to a failed authentication is delayed "
                               "when its address failed before; the delay doubles with each "
                               "further failure (the connection waits, the broker does not). "
                               "0 disables the delay.", reload=True, minimum=0, maximum=60)
    failure_delay_max: float = opt(30.0, "Longest such delay, in seconds. An address is "
                                   "forgotten after four times this without a failure.",
                                   reload=True, minimum=0, maximum=3600)


@dataclass(frozen=True, slots=True)
class AclConfig:
    file: str = opt("", "ACL file (TOML `[[rules]]`, see docs/security.md and "
                    "examples/acl.toml): who may publish, subscribe and read which topics. "
                    "Empty: every client may do everything. Once set, what no rule allows "
                    "is denied. Re-read on SIGHUP; changed rules apply to existing "
                    "subscriptions too.", reload=True)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    file: str = opt("", "Audit log: one JSON object per line for authentication failures, "
                    "ACL denials, session takeovers, reloads and password-file changes. "
                    "Empty: no audit log.", reload=True)


ADMIN_ROLES = ("read", "admin")


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str = opt("", "Who or what holds the token (shown in logs, never secret).")
    hash: str = opt("", "The token's hash, as `hbroker token` prints it "
                    "(`scrypt$N$r$p$SALT$KEY`); the token itself is never stored.")
    role: str = opt("read", "`read`: may read (`/metrics` with `metrics_auth`, and the read "
                    "calls of the API); `admin`: may also change things.", choices=ADMIN_ROLES)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool = opt(False, "Run the admin listener: an HTTP server for `/metrics` "
                        "(Prometheus), `/healthz` and `/readyz` (see docs/observability.md).")
    host: str = opt("127.0.0.1", "Address of the admin listener. On an address other than "
                    "loopback it needs `certfile` and `keyfile` (HTTPS), or `allow_insecure "
                    "= true`.")
    port: int = opt(9883, "TCP port of the admin listener; 0 picks any free port. 9883 sits "
                    "beside MQTT's 1883 and 8883, and is neither 8080 (taken by many web "
                    "servers and proxies) nor EMQX's 18083 (so both can run side by side).",
                    minimum=0, maximum=65535)
    certfile: str = opt("", "PEM file with the admin listener's server certificate (and its "
                        "chain): with `keyfile`, the listener speaks HTTPS. Same meaning as a "
                        "`tls` listener's `certfile`.")
    keyfile: str = opt("", "PEM file with the private key of `certfile`.")
    cafile: str = opt("", "PEM file of the certificate authorities that client certificates "
                      "must chain to: with it, every HTTPS client must present a valid "
                      "certificate (mutual TLS). Needs `certfile`.")
    tls_version: str = opt("1.2", "Lowest TLS version accepted.", choices=("1.2", "1.3"))
    allow_insecure: bool = opt(False, "Allow plain HTTP on an address other than loopback "
                               "(tokens then cross the network in clear: only behind a "
                               "TLS-terminating proxy or on an isolated network).")
    metrics_auth: bool = opt(False, "Whether `/metrics` needs a token (`Authorization: "
                             "Bearer TOKEN`, any role), as Prometheus sends with "
                             "`authorization: {credentials: ...}`. `/healthz` and `/readyz` "
                             "never need one: orchestrators and load balancers probe "
                             "without credentials, and they tell nothing but up or down.")
    max_body_size: int = opt(1048576, "Largest request body accepted, in bytes; a larger one "
                             "gets HTTP 413.", minimum=1024, maximum=268435456)
    tokens: tuple[AdminToken, ...] = opt((), "Bearer tokens of the admin listener, as "
                                         "`[[admin.tokens]]` tables `{ name, hash, role }` "
                                         "(`hbroker token --name NAME` makes one).")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    backend: str = opt("", "The distributed engine the instances cluster through: `nats` (NATS "
                       "with JetStream). Required in a `[cluster]` table; without the table "
                       "the broker is not clustered.", choices=CLUSTER_BACKENDS)
    servers: tuple[str, ...] = opt((), "NATS servers to connect to, as `nats://HOST:PORT` or "
                                   "`tls://HOST:PORT` URLs (port default 4222); at least one. "
                                   "One server of a NATS cluster is enough to find the others "
                                   "(NATS tells its clients the cluster's addresses); list "
                                   "several so that the first connection does not depend on "
                                   "one. Credentials go in `user`/`password`, `token`, "
                                   "`nkey_seed_file` or `creds_file`, not in the URL.")
    name: str = opt("", "This instance's name in the cluster (its NATS connection name and "
                    "its key in the cluster's records): a NATS subject token, so no `.`, `*`, "
                    "`>` or whitespace. Empty: the host name, up to its first `.`. Each "
                    "instance of a cluster needs its own.")
    user: str = opt("", "NATS user name, with `password`. One way to authenticate at most: "
                    "`user`/`password`, `token`, `nkey_seed_file` or `creds_file` (none: the "
                    "servers admit anonymous clients). Files named in this table are relative "
                    "to the working directory and must exist when the configuration is "
                    "loaded.")
    password: str = opt("", "NATS password, with `user`. Shown as `<redacted>` by `hbroker "
                        "check-config`.", secret=True)
    token: str = opt("", "NATS authentication token. Shown as `<redacted>` by `hbroker "
                     "check-config`.", secret=True)
    nkey_seed_file: str = opt("", "File holding the NATS nkey seed (`SU...`) this instance "
                              "signs the server's challenge with.")
    creds_file: str = opt("", "NATS `.creds` file (a user JWT and its nkey seed, as `nsc` "
                          "writes it), for servers in operator mode.")
    tls_ca: str = opt("", "PEM file of the authorities the NATS servers' certificates are "
                      "checked against. Empty: the system's. TLS is used with every server "
                      "that requires it (nats-server's `tls` block), whatever the URL's "
                      "scheme: the client follows what the server announces, so a `tls://` "
                      "URL alone does not refuse a server that offers plain text; "
                      "`tls_handshake_first` does.")
    tls_cert: str = opt("", "PEM client certificate presented to the NATS servers, with "
                        "`tls_key`.")
    tls_key: str = opt("", "PEM private key of `tls_cert`.")
    tls_handshake_first: bool = opt(False, "Start TLS before the server says anything, as "
                                    "nats-server does with `handshake_first: true` in its "
                                    "`tls` block (which this then needs): no byte, credentials "
                                    "included, ever goes in plain text.")
    subject_prefix: str = opt("", "NATS subject tokens put before every subject the cluster "
                              "uses (`hb` maps topic `a/b` to `hb.a.b`). Empty: none, so "
                              "NATS-native clients and nats-server's own MQTT see MQTT "
                              "traffic on the same subjects as nats-server maps them.")
    stream_replicas: int = opt(3, "Replicas of each JetStream stream and key-value bucket the "
                               "cluster keeps (messages, sessions, retained messages): with 3 "
                               "the loss of any one NATS server loses nothing. At most the "
                               "number of JetStream servers in the NATS cluster, which may be "
                               "more than `servers` lists, so it is not checked against that "
                               "list; JetStream refuses to create a stream with more replicas "
                               "than it has servers. 1 for a single NATS server.",
                               minimum=1, maximum=5)
    connect_timeout: float = opt(2.0, "Seconds one attempt to connect to a NATS server may "
                                 "take.", minimum=0.1, maximum=60)
    publish_timeout: float = opt(5.0, "Seconds JetStream has to acknowledge the store of a "
                                 "QoS 1/2 message; without its answer by then the PUBLISH is "
                                 "refused (0x80 Unspecified error; a 3.1.1 client is "
                                 "disconnected), never acknowledged.", minimum=0.1,
                                 maximum=60)
    reconnect_wait: float = opt(1.0, "Seconds between attempts to reconnect to the same NATS "
                                "server after the connection was lost; attempts go on "
                                "forever.", minimum=0.1, maximum=60)
    ping_interval: float = opt(5.0, "Seconds between NATS pings on an idle connection; a "
                               "connection that leaves two unanswered is taken as lost and "
                               "reconnected, so a dead NATS server is noticed within about "
                               "three intervals.", minimum=1, maximum=3600)


SECTIONS: dict[str, type] = {
    "limits": LimitsConfig,
    "quotas": QuotasConfig,
    "sessions": SessionsConfig,
    "sys": SysConfig,
    "logging": LoggingConfig,
    "storage": StorageConfig,
    "auth": AuthConfig,
    "acl": AclConfig,
    "audit": AuditConfig,
    "admin": AdminConfig,
}

# Tables whose absence means something (no `[cluster]`: not clustered): `Config` holds None
# for them unless the file has the table.
OPTIONAL_SECTIONS: dict[str, type] = {
    "cluster": ClusterConfig,
}

SECTION_DOCS = {
    "listeners": "Network listeners. Repeat `[[listeners]]` for several; without any, one "
                 "tcp listener on 127.0.0.1:1883.",
    "limits": "Protocol limits and resource bounds, per client unless said otherwise.",
    "quotas": "Quotas and abuse resistance: connection and publish rates, subscriptions "
              "and topic sizes (see docs/security.md).",
    "sessions": "Session lifetime and client identifiers.",
    "sys": "The `$SYS/broker/...` statistics topics.",
    "logging": "Logging to standard error.",
    "storage": "Storage of broker state.",
    "auth": "Client authentication (see docs/security.md).",
    "acl": "Authorisation: the ACL file (see docs/security.md).",
    "audit": "The audit log (see docs/security.md).",
    "admin": "The admin listener: Prometheus metrics and health checks over HTTP(S) (see "
             "docs/observability.md).",
    "cluster": "Clustering several instances through NATS with JetStream. Without this "
               "table the broker is not clustered. Every option needs a restart to change.",
}

@dataclass(frozen=True, slots=True)
class Config:
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    limits: LimitsConfig = LimitsConfig()
    quotas: QuotasConfig = QuotasConfig()
    sessions: SessionsConfig = SessionsConfig()
    sys: SysConfig = SysConfig()
    logging: LoggingConfig = LoggingConfig()
    storage: StorageConfig = StorageConfig()
    auth: AuthConfig = AuthConfig()
    acl: AclConfig = AclConfig()
    audit: AuditConfig = AuditConfig()
    admin: AdminConfig = AdminConfig()
    cluster: ClusterConfig | None = None
    source: str | None = field(default=None, compare=False)

    def to_toml(self, *, redact: bool = False) -> str:
        """The effective configuration as TOML; loading it gives an equal Config. `redact`:
        secret options that are set show `<redacted>` instead of their value."""
        lines: list[str] = []
        for lc in self.listeners:
            lines.append("[[listeners]]")
            lines += [f"{f.name} = {_toml_value(getattr(lc, f.name))}"
                      for f in dataclasses.fields(lc)]
            lines.append("")
        for name in (*SECTIONS, *OPTIONAL_SECTIONS):
            section = getattr(self, name)
            if section is None:
                continue
            lines.append(f"[{name}]")
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if redact and f.metadata["secret"] and value:
                    value = REDACTED
                lines.append(f"{f.name} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def reload_changes(self, new: Config) -> tuple[list[str], list[str]]:
        """Key paths that differ: (applied on SIGHUP, needing a restart)."""
        applied: list[str] = []
        restart: list[str] = []
        if self.listeners != new.listeners:
            restart.append("listeners")
        for name in OPTIONAL_SECTIONS:
            old_s, new_s = getattr(self, name), getattr(new, name)
            if (old_s is None) != (new_s is None):  # the table added or removed
                restart.append(name)
        for name in (*SECTIONS, *OPTIONAL_SECTIONS):
            old_s, new_s = getattr(self, name), getattr(new, name)
            if old_s is None or new_s is None:
                continue
            for f in dataclasses.fields(old_s):
                if getattr(old_s, f.name) != getattr(new_s, f.name):
                    (applied if f.metadata["reload"] else restart).append(f"{name}.{f.name}")
        return applied, restart

    def merge_reload(self, new: Config) -> Config:
        """`new` with every value that needs a restart kept as it is in `self`."""
        _, restart = self.reload_changes(new)
        merged = new
        for path in restart:
            if path == "listeners" or path in OPTIONAL_SECTIONS:
                merged = dataclasses.replace(merged, **{path: getattr(self, path)})
                continue
            section, key = path.split(".")
            kept = dataclasses.replace(getattr(merged, section),
                                       **{key: getattr(getattr(self, section), key)})
            merged = dataclasses.replace(merged, **{section: kept})
        return dataclasses.replace(merged, source=new.source)


def _toml_value(value: Any) -> str:
    if dataclasses.is_dataclass(value):  # an entry of a list of tables, as an inline table
        return "{ " + ", ".join(f"{f.name} = {_toml_value(getattr(value, f.name))}"
                                for f in dataclasses.fields(value)) + " }"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + "".join(_toml_char(c) for c in str(value)) + '"'


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_char(c: str) -> str:
    """One character of a TOML basic string: control characters must be escaped."""
    if c in _TOML_ESCAPES:
        return _TOML_ESCAPES[c]
    if c < " " or c == "\x7f":
        return f"\\u{ord(c):04x}"
    return c


def _type_name(tp: Any) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false",
            "bool | None": "true or false", "str": "a string"}.get(str(tp), str(tp))


def _check_value(where: str, path: str, f: dataclasses.Field, value: Any) -> Any:
    tp = str(f.type)
    meta = f.metadata
    got = f"got {value!r}" if not isinstance(value, str) else f'got "{value}"'
    if tp in ("bool", "bool | None"):
        ok = isinstance(value, bool)
    elif tp == "tuple[int, ...]":
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ConfigError(f"{where}: {path}: expected a list of integers, {got}")
        value = tuple(value)
    elif tp == "tuple[str, ...]":
        if not meta.get("choices"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {path}: expected a list of strings, {got}")
            return tuple(value)
        return _check_names(where, path, meta["choices"], value, got)
    elif tp == "tuple[AdminToken, ...]":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {path}: expected a list of tables "
                              f"([[{path}]]), {got}")
        return tuple(_build(AdminToken, where, f"{path}[{i}]", t) for i, t in enumerate(value))
    elif tp == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, str)
    lo, hi = meta.get("min"), meta.get("max")
    if not ok:
        expected = _type_name(tp)
        if lo is not None and hi is not None and tp in ("int", "float"):
            expected += f" from {_num(lo)} to {_num(hi)}"
        raise ConfigError(f"{where}: {path}: expected {expected}, {got}")
    if tp in ("int", "float"):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                rng = f"from {_num(lo)} to {_num(hi)}"
            elif lo is not None:
                rng = f"of at least {_num(lo)}"
            else:
                rng = f"of at most {_num(hi)}"
            raise ConfigError(f"{where}: {path}: expected {_type_name(tp)} {rng}, {got}")
    choices = meta.get("choices")
    if choices and value not in choices:
        expected = " or ".join(f"'{c}'" for c in choices)
        raise ConfigError(f"{where}: {path}: expected {expected}, {got}")
    return value


def _check_names(where: str, path: str, choices: tuple, value: Any, got: str) -> tuple:
    """A list of distinct names among `choices`."""
    names = [f"'{c}'" for c in choices]
    expected = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {path}: expected a list of names among {expected}, {got}")
    for name in value:
        if name not in choices:
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f'{where}: {path}: unknown name "{name}"{hint}; expected names '
                              f"among {expected}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {path}: expected distinct names, {got}")
    return tuple(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _unknown(where: str, path: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = f" (did you mean '{close[0]}'?)"
    else:
        hint = f" (expected one of: {', '.join(known)})"
    return ConfigError(f"{where}: unknown key '{path}'{hint}")


def _build(cls: type, where: str, prefix: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {prefix}: expected a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        path = f"{prefix}.{key}"
        f = fields.get(key)
        if f is None:
            raise _unknown(where, path, key, list(fields))
        values[key] = _check_value(where, path, f, value)
    return cls(**values)


_TLS_ONLY = ("certfile", "keyfile", "cafile", "crlfile", "require_certificate",
             "certificate_identity", "use_identity_as_username", "tls_version", "ciphers")
_NEEDS_CAFILE = ("crlfile", "require_certificate", "use_identity_as_username")


def _check_listener(where: str, prefix: str, lc: ListenerConfig) -> None:
    """What one listener's options must satisfy together. An option that does not apply to
    the listener's type must keep its default (so `to_toml()` output loads back)."""
    kind = lc.type
    defaults = ListenerConfig(type=kind)
    table = {f.name for f in dataclasses.fields(lc)
             if getattr(lc, f.name) != getattr(defaults, f.name)}
    if kind not in TLS_TYPES:
        for key in _TLS_ONLY:
            if key in table:
                raise ConfigError(f"{where}: {prefix}.{key}: only for tls and wss listeners "
                                  f'(type is "{kind}")')
    else:
        for key in ("certfile", "keyfile"):
            if not getattr(lc, key):
                raise ConfigError(f"{where}: {prefix}.{key}: expected a PEM file name "
                                  f'(type is "{kind}"), got nothing')
        for key in _NEEDS_CAFILE:
            if getattr(lc, key) and not lc.cafile:
                raise ConfigError(f"{where}: {prefix}.cafile: expected the PEM file of the "
                                  f"client certificates' authority ({key} is set), got nothing")
    if kind == "unix":
        if not lc.path:
            raise ConfigError(f"{where}: {prefix}.path: expected the socket file name "
                              '(type is "unix"), got nothing')
        for key in ("host", "port"):
            if key in table:
                raise ConfigError(f"{where}: {prefix}.{key}: not used by unix listeners "
                                  "(set path)")
    elif kind in WEBSOCKET_TYPES:
        if not lc.path.startswith("/"):
            raise ConfigError(f'{where}: {prefix}.path: expected an HTTP path starting with '
                              f'"/", got "{lc.path}"')
        for origin in lc.allowed_origins:
            if origin != "*" and not is_web_origin(origin):
                raise ConfigError(f"{where}: {prefix}.allowed_origins: expected origins such "
                                  'as "https://app.example.com" (scheme://host[:port], no '
                                  f'path) or "*", got "{origin}"')
    elif "path" in table:
        raise ConfigError(f"{where}: {prefix}.path: only for unix, ws and wss listeners "
                          f'(type is "{kind}")')
    if "allowed_origins" in table and kind not in WEBSOCKET_TYPES:
        raise ConfigError(f"{where}: {prefix}.allowed_origins: only for ws and wss listeners "
                          f'(type is "{kind}")')
    if "mode" in table and kind != "unix":
        raise ConfigError(f"{where}: {prefix}.mode: only for unix listeners "
                          f'(type is "{kind}")')
    if not (len(lc.mode) in (3, 4) and all(c in "01234567" for c in lc.mode)):
        raise ConfigError(f"{where}: {prefix}.mode: expected octal permission bits such as "
                          f'"0660", got "{lc.mode}"')
    versions = lc.protocol_versions
    if not versions or len(set(versions)) != len(versions) \
            or any(v not in PROTOCOL_VERSIONS for v in versions):
        raise ConfigError(f"{where}: {prefix}.protocol_versions: expected a non-empty list of "
                          f"distinct levels among 3, 4 and 5, got {list(versions)!r}")


def parse_config(data: dict[str, Any], where: str) -> Config:
    values: dict[str, Any] = {}
    known = ["listeners", *SECTIONS, *OPTIONAL_SECTIONS]
    for key in data:
        if key not in known:
            raise _unknown(where, key, key, known)
    if "listeners" in data:
        raw = data["listeners"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}: listeners: expected one or more [[listeners]] tables")
        listeners = tuple(_build(ListenerConfig, where, f"listeners[{i}]", t)
                          for i, t in enumerate(raw))
        seen: dict[tuple[str, int], int] = {}
        seen_paths: dict[str, int] = {}
        for i, lc in enumerate(listeners):
            _check_listener(where, f"listeners[{i}]", lc)
            if lc.type == "unix":
                if lc.path in seen_paths:
                    raise ConfigError(f"{where}: listeners[{i}].path: {lc.path} is already "
                                      f"used by listeners[{seen_paths[lc.path]}]")
                seen_paths[lc.path] = i
                continue
            addr = (lc.host, lc.port)
            if lc.port and addr in seen:
                raise ConfigError(f"{where}: listeners[{i}]: port {lc.port} on {lc.host} is "
                                  f"already used by listeners[{seen[addr]}]")
            seen[addr] = i
        values["listeners"] = listeners
    for name, cls in (*SECTIONS.items(), *OPTIONAL_SECTIONS.items()):
        if name in data:
            values[name] = _build(cls, where, name, data[name])
    if "cluster" in values:
        values["cluster"] = _check_cluster(where, values["cluster"])
    storage = values.get("storage")
    if storage is not None and storage.backend == "postgres" and not storage.dsn:
        raise ConfigError(f"{where}: storage.dsn: expected a PostgreSQL connection string "
                          "(backend is \"postgres\"), got nothing")
    _check_auth(where, values.get("auth"), values.get("listeners", ()))
    if "admin" in values:
        _check_admin(where, values["admin"])
    return Config(**values, source=where if where != "<default>" else None)


def _check_auth(where: str, auth: AuthConfig | None,
                listeners: tuple[ListenerConfig, ...]) -> None:
    if auth is not None and auth.scram and not auth.password_file \
            and not any(lc.password_file for lc in listeners):
        raise ConfigError(f"{where}: auth.password_file: expected the password file holding "
                          "the SCRAM keys (auth.scram is true), got nothing")
    for i, lc in enumerate(listeners):
        _check_listener_auth(where, f"listeners[{i}]", lc, auth or AuthConfig())
    if auth is None:
        return
    url = auth.webhook_url
    if url and not (url.startswith(("http://", "https://")) and len(url.split("/", 3)[2])):
        raise ConfigError(f'{where}: auth.webhook_url: expected an http:// or https:// URL, '
                          f'got "{url}"')
    if auth.failure_delay_max < auth.failure_delay:
        raise ConfigError(f"{where}: auth.failure_delay_max: expected a number of at least "
                          f"auth.failure_delay ({_num(auth.failure_delay)}), got "
                          f"{auth.failure_delay_max!r}")


def _check_listener_auth(where: str, prefix: str, lc: ListenerConfig,
                         auth: AuthConfig) -> None:
    """A listener's own authentication sources against those `[auth]` configures."""
    sources = lc.auth
    if lc.password_file and "password_file" not in sources and "scram" not in sources:
        raise ConfigError(f"{where}: {prefix}.password_file: not used: {prefix}.auth names "
                          "neither 'password_file' nor 'scram'")
    has_passwords = bool(lc.password_file or auth.password_file)
    configured = {"password_file": has_passwords, "webhook": bool(auth.webhook_url),
                  "scram": auth.scram}
    if sources != AUTH_SOURCES:  # the default: every source configured in [auth]
        needs = {"password_file": f"{prefix}.password_file or auth.password_file",
                 "webhook": "auth.webhook_url", "scram": "auth.scram = true"}
        for source in sources:
            if not configured[source]:
                raise ConfigError(f'{where}: {prefix}.auth: "{source}" is not configured (it '
                                  f"needs {needs[source]})")
        if not sources and not lc.allow_anonymous and not lc.use_identity_as_username:
            raise ConfigError(f"{where}: {prefix}.auth: an empty list accepts any username "
                              "without a check; set allow_anonymous = true to mean that, or "
                              "name a source")
    configured["scram"] = auth.scram and has_passwords  # its keys are in a password file
    if not lc.allow_anonymous and not lc.use_identity_as_username \
            and not any(configured[source] for source in sources):
        # A client is admitted only when a source accepted it (hbroker.connection
        # authenticate): with none, this listener would refuse every client.
        local = lc.type == "unix" or is_loopback(lc.host)
        default = "" if local else ", the default off the loopback address"
        raise ConfigError(f"{where}: {prefix}: listener {lc.label} admits only authenticated "
                          f"clients (allow_anonymous is false{default}) but no authentication "
                          "source applies to it: set a password file "
                          f"({prefix}.password_file or auth.password_file), auth.webhook_url "
                          "or use_identity_as_username, or allow_anonymous = true")


def _check_admin(where: str, admin: AdminConfig) -> None:
    """What the admin listener's options must satisfy together."""
    from hbroker.admin.tokens import TokenHashError, parse_hash

    for key, other in (("certfile", "keyfile"), ("keyfile", "certfile")):
        if getattr(admin, key) and not getattr(admin, other):
            raise ConfigError(f"{where}: admin.{other}: expected a PEM file name (admin.{key} "
                              "is set), got nothing")
    if admin.cafile and not admin.certfile:
        raise ConfigError(f"{where}: admin.certfile: expected a PEM file name (admin.cafile "
                          "is set), got nothing")
    names: set[str] = set()
    for i, token in enumerate(admin.tokens):
        prefix = f"admin.tokens[{i}]"
        if not token.name:
            raise ConfigError(f"{where}: {prefix}.name: expected a name, got nothing")
        if token.name in names:
            raise ConfigError(f'{where}: {prefix}.name: "{token.name}" names another token '
                              "already")
        names.add(token.name)
        try:
            parse_hash(token.hash)
        except TokenHashError as exc:
            raise ConfigError(f"{where}: {prefix}.hash: {exc}") from None
    if not admin.enabled:
        return
    if admin.metrics_auth and not admin.tokens:
        raise ConfigError(f"{where}: admin.tokens: expected at least one token "
                          "(admin.metrics_auth is true), got none")
    if not admin.certfile and not admin.allow_insecure and not is_loopback(admin.host):
        raise ConfigError(f'{where}: admin.host: "{admin.host}" is not a loopback address: '
                          "the admin listener needs admin.certfile and admin.keyfile (HTTPS) "
                          "there, or admin.allow_insecure = true")


REDACTED = "<redacted>"
# What a NATS subject token may not hold (nats-server's subject validation).
_NOT_IN_TOKEN = (".", "*", ">", " ", "\t", "\n", "\r", "\f")


def is_subject_token(text: str) -> bool:
    """Whether `text` is one literal NATS subject token."""
    return bool(text) and not any(c in text for c in _NOT_IN_TOKEN)


def default_node_name() -> str:
    """This machine's host name up to its first `.` (a fully qualified name is no token)."""
    return socket.gethostname().split(".", 1)[0]


def _check_nats_url(where: str, url: str) -> None:
    expected = (f"{where}: cluster.servers: expected URLs such as \"nats://nats1.example:4222\""
                f' (nats:// or tls://, a host, an optional port), got "{url}"')
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(expected) from None
    if parts.scheme not in CLUSTER_URL_SCHEMES or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or \
            (port is not None and not 0 < port < 65536):
        raise ConfigError(expected)
    if parts.username is not None or parts.password is not None:
        # One place for credentials, so that check-config can redact them.
        raise ConfigError(f"{where}: cluster.servers: credentials in a URL are not accepted "
                          f'(set cluster.user and cluster.password, or cluster.token), got '
                          f'"{parts.scheme}://...@{parts.hostname}"')


def _check_cluster(where: str, cluster: ClusterConfig) -> ClusterConfig:
    """What the [cluster] options must satisfy together; the node name resolved."""
    if not cluster.backend:
        raise ConfigError(f"{where}: cluster.backend: expected 'nats', got nothing")
    if not cluster.servers:
        raise ConfigError(f"{where}: cluster.servers: expected one or more nats:// or tls:// "
                          "URLs, got nothing")
    for url in cluster.servers:
        _check_nats_url(where, url)
    if not cluster.name:
        cluster = dataclasses.replace(cluster, name=default_node_name())
        if not is_subject_token(cluster.name):
            raise ConfigError(f"{where}: cluster.name: the host name \"{cluster.name}\" is "
                              "not a NATS subject token; set cluster.name")
    if not is_subject_token(cluster.name):
        raise ConfigError(f"{where}: cluster.name: expected a NATS subject token (no '.', "
                          f"'*', '>' or whitespace), got \"{cluster.name}\"")
    if cluster.subject_prefix and not all(
            is_subject_token(token) for token in cluster.subject_prefix.split(".")):
        raise ConfigError(f"{where}: cluster.subject_prefix: expected NATS subject tokens "
                          "separated by '.' (no '*', '>', whitespace or empty token), got "
                          f'"{cluster.subject_prefix}"')
    if cluster.user and not cluster.password:
        raise ConfigError(f"{where}: cluster.password: expected the password of cluster.user, "
                          "got nothing")
    if cluster.password and not cluster.user:
        raise ConfigError(f"{where}: cluster.user: expected the user of cluster.password, "
                          "got nothing")
    methods = [key for key in ("user", "token", "nkey_seed_file", "creds_file")
               if getattr(cluster, key)]
    if len(methods) > 1:
        names = " and ".join(f"cluster.{key}" for key in methods)
        raise ConfigError(f"{where}: cluster.{methods[1]}: expected one way to authenticate to "
                          f"NATS, got {names}")
    if bool(cluster.tls_cert) != bool(cluster.tls_key):
        missing, given = ("tls_key", "tls_cert") if cluster.tls_cert else ("tls_cert",
                                                                            "tls_key")
        raise ConfigError(f"{where}: cluster.{missing}: expected a PEM file (cluster.{given} "
                          "is set), got nothing")
    for key in ("nkey_seed_file", "creds_file", "tls_ca", "tls_cert", "tls_key"):
        path = getattr(cluster, key)
        if path and not os.path.isfile(path):
            raise ConfigError(f'{where}: cluster.{key}: file not found: "{path}"')
    return cluster


def load_config(path: str | os.PathLike | None) -> Config:
    """The configuration from a TOML file, or the embedded default when `path` is None."""
    if path is None:
        return Config()
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: not UTF-8 (byte {exc.start})") from None
    return parse_config(data, where)
