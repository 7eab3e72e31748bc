"""Loading the TOML configuration: defaults, the full example, and every kind of mistake.

A mistake must be a ConfigError whose message is `FILE: KEY: what was expected, got VALUE` (or
`FILE: unknown key 'KEY' (...)`), so the tests compare whole messages, not fragments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hbroker.config import (
    SECTIONS,
    Config,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    StorageConfig,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hbroker.toml"


def write(tmp_path: Path, text: str | bytes, name: str = "hbroker.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# What loads
# ---------------------------------------------------------------------------------------------


def test_embedded_default_is_one_tcp_listener_on_localhost_1883() -> None:
    config = load_config(None)
    assert config.listeners == (ListenerConfig(type="tcp", host="127.0.0.1", port=1883,
                                               name=""),)
    assert config.storage == StorageConfig()
    assert config.storage.backend == "sqlite"
    assert config.limits == LimitsConfig()
    assert config.source is None
    assert config == Config()


def test_empty_file_gives_the_defaults_and_records_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config == Config()
    assert config.source == str(path)


def test_example_file_loads_every_option_at_its_default() -> None:
    config = load_config(EXAMPLE)
    assert config == Config()
    assert config.source == str(EXAMPLE)
    # The example really sets every option: each one appears as `key = ...` in the file.
    text = EXAMPLE.read_text(encoding="utf-8")
    for cls in (ListenerConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f.name


def test_full_file_with_every_value_changed_loads_those_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[listeners]]
host = "0.0.0.0"
port = 1884
name = "public"

[[listeners]]
host = "::"
port = 0

[limits]
max_connections = 5
max_packet_size = 268435460
max_inflight = 65535
max_queued_messages = 0
max_queued_bytes = 0
max_keepalive = 1
max_qos = 0
retain_available = false
wildcard_subscription_available = false
shared_subscription_available = false
subscription_identifier_available = false
topic_alias_maximum = 0
connect_timeout = 1

[sessions]
max_session_expiry_interval = 0
persistent_client_expiration = 4294967295
queue_qos0_messages = true
allow_zero_length_client_id = false
max_client_id_length = 1

[sys]
enabled = false
interval = 86400

[logging]
level = "debug"
format = "json"

[storage]
backend = "memory"

[auth]
webhook_url = "https://auth.example/mqtt"
""")
    config = load_config(path)
    assert config.listeners == (
        ListenerConfig(type="tcp", host="0.0.0.0", port=1884, name="public"),
        ListenerConfig(type="tcp", host="::", port=0, name=""),
    )
    assert config.limits == LimitsConfig(
        max_connections=5, max_packet_size=268435460, max_inflight=65535,
        max_queued_messages=0, max_queued_bytes=0, max_keepalive=1, max_qos=0,
        retain_available=False, wildcard_subscription_available=False,
        shared_subscription_available=False, subscription_identifier_available=False,
        topic_alias_maximum=0, connect_timeout=1.0)
    # An integer where a number is expected is taken as a float.
    assert type(config.limits.connect_timeout) is float
    assert config.sessions.max_session_expiry_interval == 0
    assert config.sessions.persistent_client_expiration == 4294967295
    assert config.sessions.queue_qos0_messages is True
    assert config.sessions.allow_zero_length_client_id is False
    assert config.sessions.max_client_id_length == 1
    assert (config.sys.enabled, config.sys.interval) == (False, 86400)
    assert (config.logging.level, config.logging.format) == ("debug", "json")
    assert config.storage.backend == "memory"
    # Options not in the file keep their defaults.
    assert config.storage.path == StorageConfig().path


def test_two_listeners_on_port_zero_do_not_conflict(tmp_path: Path) -> None:
    path = write(tmp_path, "[[listeners]]\nport = 0\n[[listeners]]\nport = 0\n")
    assert [lc.port for lc in load_config(path).listeners] == [0, 0]


def test_same_port_on_different_hosts_does_not_conflict(tmp_path: Path) -> None:
    path = write(tmp_path, '[[listeners]]\nhost = "127.0.0.1"\n'
                           '[[listeners]]\nhost = "::1"\n')
    assert [(lc.host, lc.port) for lc in load_config(path).listeners] == [
        ("127.0.0.1", 1883), ("::1", 1883)]


def test_effective_configuration_as_toml_loads_back_equal(tmp_path: Path) -> None:
    """`check-config` prints `to_toml()`; it must be valid TOML that loads to the same values,
    whatever characters a string option holds."""
    path = write(tmp_path, """
[[listeners]]
host = "::"
port = 1999
name = "quote \\" backslash \\\\ tab \\t newline \\n bell \\u0007 del \\u007f é 😀"

[limits]
connect_timeout = 0.25
max_queued_bytes = 12345678901

[logging]
format = "json"

[auth]
webhook_url = "https://auth.example/mqtt"
""")
    config = load_config(path)
    assert config.listeners[0].name == (
        'quote " backslash \\ tab \t newline \n bell \x07 del \x7f é 😀')
    again = load_config(write(tmp_path, config.to_toml(), "effective.toml"))
    assert again == config
    assert again.listeners[0].name == config.listeners[0].name


# ---------------------------------------------------------------------------------------------
# What does not load: (id, file text, key, the message after "FILE: ")
# ---------------------------------------------------------------------------------------------

BAD_SNIPPETS: list[tuple[str, str, str, str]] = [
    # Unknown keys, top-level and nested.
    ("unknown-top-level", "bogus = 1\n", "bogus",
     "unknown key 'bogus' (expected one of: listeners, limits, quotas, sessions, sys, "
     "logging, "
     "storage, auth, acl, audit, admin, cluster)"),
    ("scram-without-password-file", "[auth]\nscram = true\n", "auth.password_file",
     "auth.password_file: expected the password file holding the SCRAM keys (auth.scram is "
     "true), got nothing"),
    ("webhook-not-http", '[auth]\nwebhook_url = "ftp://auth.example/"\n', "auth.webhook_url",
     'auth.webhook_url: expected an http:// or https:// URL, got "ftp://auth.example/"'),
    ("webhook-timeout-zero", "[auth]\nwebhook_timeout = 0\n", "auth.webhook_timeout",
     "auth.webhook_timeout: expected a number from 0.1 to 60, got 0"),
    ("failure-delay-max-below-delay", "[auth]\nfailure_delay = 5.0\nfailure_delay_max = 1.0\n",
     "auth.failure_delay_max", "auth.failure_delay_max: expected a number of at least "
     "auth.failure_delay (5), got 1.0"),
    ("acl-file-not-a-string", "[acl]\nfile = 1\n", "acl.file",
     "acl.file: expected a string, got 1"),
    ("misspelt-audit", "[audit]\npath = \"a.jsonl\"\n", "audit.path",
     "unknown key 'audit.path' (expected one of: file)"),
    ("misspelt-top-level", "[[listener]]\nport = 1\n", "listener",
     "unknown key 'listener' (did you mean 'listeners'?)"),
    ("misspelt-limit", "[limits]\nmax_inflght = 5\n", "limits.max_inflght",
     "unknown key 'limits.max_inflght' (did you mean 'max_inflight'?)"),
    ("unknown-listener-key", "[[listeners]]\nsecure = true\n", "listeners[0].secure",
     "unknown key 'listeners[0].secure' (expected one of: type, host, port, name, path, "
     "mode, allowed_origins, max_connections, protocol_versions, allow_anonymous, certfile, "
     "keyfile, cafile, "
     "crlfile, require_certificate, certificate_identity, use_identity_as_username, "
     "tls_version, ciphers, password_file, auth)"),
    ("unknown-in-second-listener", "[[listeners]]\nport = 1\n[[listeners]]\nprot = 2\n",
     "listeners[1].prot", "unknown key 'listeners[1].prot' (did you mean 'port'?)"),
    ("nested-table-in-section", "[sys.extra]\nx = 1\n", "sys.extra",
     "unknown key 'sys.extra' (expected one of: enabled, interval)"),
    ("misspelt-section-key", "[logging]\nlevle = \"info\"\n", "logging.levle",
     "unknown key 'logging.levle' (did you mean 'level'?)"),
    # Wrong types.
    ("port-as-string", '[[listeners]]\nport = "1883"\n', "listeners[0].port",
     'listeners[0].port: expected an integer from 0 to 65535, got "1883"'),
    ("host-as-integer", "[[listeners]]\nhost = 127\n", "listeners[0].host",
     "listeners[0].host: expected a string, got 127"),
    ("integer-as-float", "[limits]\nmax_inflight = 1.5\n", "limits.max_inflight",
     "limits.max_inflight: expected an integer from 1 to 65535, got 1.5"),
    ("integer-as-whole-float", "[limits]\nmax_connections = 10.0\n", "limits.max_connections",
     "limits.max_connections: expected an integer, got 10.0"),
    ("integer-as-bool", "[limits]\nmax_qos = true\n", "limits.max_qos",
     "limits.max_qos: expected an integer from 0 to 2, got True"),
    ("bool-as-integer", "[limits]\nretain_available = 1\n", "limits.retain_available",
     "limits.retain_available: expected true or false, got 1"),
    ("bool-as-string", '[sys]\nenabled = "yes"\n', "sys.enabled",
     'sys.enabled: expected true or false, got "yes"'),
    ("number-as-string", '[limits]\nconnect_timeout = "10"\n', "limits.connect_timeout",
     'limits.connect_timeout: expected a number, got "10"'),
    ("number-infinite", "[limits]\nconnect_timeout = inf\n", "limits.connect_timeout",
     "limits.connect_timeout: expected a number, got inf"),
    ("number-nan", "[limits]\nconnect_timeout = nan\n", "limits.connect_timeout",
     "limits.connect_timeout: expected a number, got nan"),
    ("string-as-array", '[logging]\nlevel = ["info"]\n', "logging.level",
     "logging.level: expected a string, got ['info']"),
    ("integer-as-date", "[sys]\ninterval = 1979-05-27\n", "sys.interval",
     "sys.interval: expected an integer from 1 to 86400, got datetime.date(1979, 5, 27)"),
    ("section-as-value", "limits = 3\n", "limits", "limits: expected a table, got 3"),
    ("section-as-array", "[[sessions]]\n", "sessions", "sessions: expected a table, got [{}]"),
    ("listeners-empty", "listeners = []\n", "listeners",
     "listeners: expected one or more [[listeners]] tables"),
    ("listeners-as-table", "[listeners]\nport = 1\n", "listeners",
     "listeners: expected one or more [[listeners]] tables"),
    ("listener-as-value", "listeners = [1883]\n", "listeners[0]",
     "listeners[0]: expected a table, got 1883"),
    # Values outside the allowed choices.
    ("listener-type-quic", '[[listeners]]\ntype = "quic"\n', "listeners[0].type",
     "listeners[0].type: expected 'tcp' or 'tls' or 'ws' or 'wss' or 'unix', got \"quic\""),
    ("log-level", '[logging]\nlevel = "trace"\n', "logging.level",
     "logging.level: expected 'debug' or 'info' or 'warning' or 'error', got \"trace\""),
    ("log-level-case", '[logging]\nlevel = "INFO"\n', "logging.level",
     "logging.level: expected 'debug' or 'info' or 'warning' or 'error', got \"INFO\""),
    ("log-format", '[logging]\nformat = "xml"\n', "logging.format",
     "logging.format: expected 'text' or 'json', got \"xml\""),
    ("storage-backend", '[storage]\nbackend = "mysql"\n', "storage.backend",
     "storage.backend: expected 'sqlite' or 'postgres' or 'memory', got \"mysql\""),
    ("storage-mode", '[storage]\nmode = "async"\n', "storage.mode",
     "storage.mode: expected 'sync' or 'periodic', got \"async\""),
    ("postgres-without-dsn", '[storage]\nbackend = "postgres"\n', "storage.dsn",
     'storage.dsn: expected a PostgreSQL connection string (backend is "postgres"), '
     "got nothing"),
    # Impossible values.
    ("port-too-large", "[[listeners]]\nport = 70000\n", "listeners[0].port",
     "listeners[0].port: expected an integer from 0 to 65535, got 70000"),
    ("port-negative", "[[listeners]]\nport = -1\n", "listeners[0].port",
     "listeners[0].port: expected an integer from 0 to 65535, got -1"),
    ("duplicate-listener", "[[listeners]]\nport = 1884\n[[listeners]]\nname = \"b\"\n"
     "[[listeners]]\nport = 1884\n", "listeners[2]",
     "listeners[2]: port 1884 on 127.0.0.1 is already used by listeners[0]"),
    ("max-connections-zero", "[limits]\nmax_connections = 0\n", "limits.max_connections",
     "limits.max_connections: expected an integer of at least 1, got 0"),
    ("max-connections-negative", "[limits]\nmax_connections = -5\n", "limits.max_connections",
     "limits.max_connections: expected an integer of at least 1, got -5"),
    ("max-packet-size-too-small", "[limits]\nmax_packet_size = 15\n", "limits.max_packet_size",
     "limits.max_packet_size: expected an integer from 16 to 268435460, got 15"),
    # The protocol's largest packet: a 268435455-byte remaining length plus a 5-byte fixed
    # header (max_packet_size counts the fixed header).
    ("max-packet-size-too-large", "[limits]\nmax_packet_size = 268435461\n",
     "limits.max_packet_size",
     "limits.max_packet_size: expected an integer from 16 to 268435460, got 268435461"),
    ("max-inflight-zero", "[limits]\nmax_inflight = 0\n", "limits.max_inflight",
     "limits.max_inflight: expected an integer from 1 to 65535, got 0"),
    ("max-inflight-too-large", "[limits]\nmax_inflight = 65536\n", "limits.max_inflight",
     "limits.max_inflight: expected an integer from 1 to 65535, got 65536"),
    ("max-queued-messages-negative", "[limits]\nmax_queued_messages = -1\n",
     "limits.max_queued_messages",
     "limits.max_queued_messages: expected an integer of at least 0, got -1"),
    ("max-queued-bytes-negative", "[limits]\nmax_queued_bytes = -1\n",
     "limits.max_queued_bytes",
     "limits.max_queued_bytes: expected an integer of at least 0, got -1"),
    ("max-keepalive-zero", "[limits]\nmax_keepalive = 0\n", "limits.max_keepalive",
     "limits.max_keepalive: expected an integer from 1 to 65535, got 0"),
    ("max-keepalive-too-large", "[limits]\nmax_keepalive = 65536\n", "limits.max_keepalive",
     "limits.max_keepalive: expected an integer from 1 to 65535, got 65536"),
    ("max-qos-3", "[limits]\nmax_qos = 3\n", "limits.max_qos",
     "limits.max_qos: expected an integer from 0 to 2, got 3"),
    ("max-qos-negative", "[limits]\nmax_qos = -1\n", "limits.max_qos",
     "limits.max_qos: expected an integer from 0 to 2, got -1"),
    ("topic-alias-maximum-too-large", "[limits]\ntopic_alias_maximum = 65536\n",
     "limits.topic_alias_maximum",
     "limits.topic_alias_maximum: expected an integer from 0 to 65535, got 65536"),
    ("connect-timeout-too-small", "[limits]\nconnect_timeout = 0.05\n",
     "limits.connect_timeout",
     "limits.connect_timeout: expected a number of at least 0.1, got 0.05"),
    ("connect-timeout-negative", "[limits]\nconnect_timeout = -10\n", "limits.connect_timeout",
     "limits.connect_timeout: expected a number of at least 0.1, got -10"),
    ("session-expiry-too-large", "[sessions]\nmax_session_expiry_interval = 4294967296\n",
     "sessions.max_session_expiry_interval",
     "sessions.max_session_expiry_interval: expected an integer from 0 to 4294967295, "
     "got 4294967296"),
    ("persistent-expiration-negative", "[sessions]\npersistent_client_expiration = -1\n",
     "sessions.persistent_client_expiration",
     "sessions.persistent_client_expiration: expected an integer from 0 to 4294967295, "
     "got -1"),
    ("client-id-length-zero", "[sessions]\nmax_client_id_length = 0\n",
     "sessions.max_client_id_length",
     "sessions.max_client_id_length: expected an integer from 1 to 65535, got 0"),
    ("sys-interval-zero", "[sys]\ninterval = 0\n", "sys.interval",
     "sys.interval: expected an integer from 1 to 86400, got 0"),
    ("sys-interval-too-large", "[sys]\ninterval = 86401\n", "sys.interval",
     "sys.interval: expected an integer from 1 to 86400, got 86401"),
    ("flush-interval-zero", "[storage]\nflush_interval_ms = 0\n", "storage.flush_interval_ms",
     "storage.flush_interval_ms: expected an integer from 1 to 3600000, got 0"),
    ("storage-max-size-negative", "[storage]\nmax_size = -1\n", "storage.max_size",
     "storage.max_size: expected an integer of at least 0, got -1"),
]


@pytest.mark.parametrize(("snippet", "key", "message"), [case[1:] for case in BAD_SNIPPETS],
                         ids=[case[0] for case in BAD_SNIPPETS])
def test_bad_configuration_is_refused_naming_file_key_and_expectation(
        tmp_path: Path, snippet: str, key: str, message: str) -> None:
    path = write(tmp_path, snippet)
    error = load_error(path)
    assert error == f"{path}: {message}"
    assert error.startswith(f"{path}: ")
    assert key in error


def test_first_mistake_in_file_order_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_qos = 5\n[sys]\ninterval = 0\n")
    assert load_error(path) == (
        f"{path}: limits.max_qos: expected an integer from 0 to 2, got 5")


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "[[listeners]]\nport = 65535\n"
                           "[limits]\nmax_packet_size = 16\nconnect_timeout = 0.1\n"
                           "max_queued_messages = 0\n"
                           "[sessions]\nmax_session_expiry_interval = 4294967295\n"
                           "[sys]\ninterval = 1\n"
                           "[storage]\nflush_interval_ms = 3600000\n")
    config = load_config(path)
    assert config.listeners[0].port == 65535
    assert config.limits.max_packet_size == 16
    assert config.limits.connect_timeout == 0.1
    assert config.limits.max_queued_messages == 0
    assert config.sessions.max_session_expiry_interval == 4294967295
    assert config.sys.interval == 1
    assert config.storage.flush_interval_ms == 3600000


# ---------------------------------------------------------------------------------------------
# Files that are not TOML at all
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("snippet", "position"), [
    ("[limits\nmax_qos = 1\n", "(at line 1, column 8)"),
    ("[limits]\nmax_qos = \n", "(at line 2, column 11)"),
    ("[limits]\nmax_qos = 1\nmax_qos = 2\n", "(at line 3, column 12)"),
    ('[logging]\nlevel = "info\n', "(at line 2, column 14)"),
    ("[limits]\n[limits]\n", "(at line 2, column 8)"),
], ids=["unclosed-table", "missing-value", "duplicate-key", "unclosed-string", "table-twice"])
def test_toml_syntax_error_names_the_file_and_position(tmp_path: Path, snippet: str,
                                                       position: str) -> None:
    path = write(tmp_path, snippet)
    error = load_error(path)
    assert error.startswith(f"{path}: not valid TOML: ")
    assert error.endswith(position)


def test_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, b'[[listeners]]\nname = "caf\xe9"\n')
    error = load_error(path)
    assert error == f"{path}: not valid TOML: not UTF-8 (byte 25)"


def test_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert load_error(path) == f"{path}: file not found"


def test_directory_instead_of_file_is_refused_naming_it(tmp_path: Path) -> None:
    assert load_error(tmp_path).startswith(f"{tmp_path}: cannot read: ")
