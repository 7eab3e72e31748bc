"""[[listeners]] settings: defaults that depend on the listener, and every mistake named with
the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbroker.config import AUTH_SOURCES, ConfigError, ListenerConfig, load_config


def load(tmp_path: Path, text: str) -> tuple[ListenerConfig, ...]:
    path = tmp_path / "hbroker.toml"
    path.write_text(text)
    return load_config(path).listeners


@pytest.mark.parametrize(("table", "anonymous"), [
    ('type = "tcp"\nhost = "127.0.0.1"', True),
    ('type = "tcp"\nhost = "127.0.0.2"', True),
    ('type = "tcp"\nhost = "::1"', True),
    ('type = "tcp"\nhost = "localhost"', True),
    ('type = "unix"\npath = "/run/hbroker/mqtt.sock"', True),
    ('type = "tcp"\nhost = "0.0.0.0"', False),
    ('type = "ws"\nhost = "::"', False),
    ('type = "tcp"\nhost = "192.168.10.1"', False),
    ('type = "tcp"\nhost = "gateway.example"', False),
    ('type = "tcp"\nhost = "0.0.0.0"\nallow_anonymous = true', True),
    ('type = "tcp"\nhost = "127.0.0.1"\nallow_anonymous = false', False),
])
def test_anonymous_clients_are_allowed_by_default_only_on_loopback_and_unix_listeners(
        tmp_path: Path, table: str, anonymous: bool) -> None:
    # (A listener without anonymous clients needs an authentication source: the webhook.)
    lc, = load(tmp_path, f"[[listeners]]\n{table}\n"
                         '[auth]\nwebhook_url = "https://auth.example/mqtt"\n')
    assert lc.allow_anonymous is anonymous


def test_websocket_listeners_default_to_the_mqtt_path(tmp_path: Path) -> None:
    ws, custom = load(tmp_path, '[[listeners]]\ntype = "ws"\nport = 8080\n'
                                '[[listeners]]\ntype = "ws"\nport = 8081\npath = "/ws"\n')
    assert (ws.path, custom.path) == ("/mqtt", "/ws")


def test_listener_labels_name_type_and_address(tmp_path: Path) -> None:
    listeners = load(tmp_path, '[[listeners]]\ntype = "tcp"\nport = 1\n'
                               '[[listeners]]\ntype = "unix"\npath = "/tmp/m.sock"\n'
                               '[[listeners]]\nname = "field"\nport = 2\n')
    assert [lc.label for lc in listeners] == ["tcp://127.0.0.1:1", "unix:///tmp/m.sock",
                                              "field"]


def test_full_tls_listener_loads_and_prints_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "hbroker.toml"
    path.write_text("""
[[listeners]]
type = "wss"
host = "0.0.0.0"
port = 8884
path = "/mqtt/ws"
allowed_origins = ["https://app.example.com", "http://[::1]:8080"]
max_connections = 500
protocol_versions = [4, 5]
certfile = "/etc/hbroker/server.pem"
keyfile = "/etc/hbroker/server.key"
cafile = "/etc/hbroker/ca.pem"
crlfile = "/etc/hbroker/crl.pem"
require_certificate = true
certificate_identity = "san_dns"
use_identity_as_username = true
tls_version = "1.3"
ciphers = "ECDHE+AESGCM"

[[listeners]]
type = "unix"
path = "/run/hbroker/mqtt.sock"
mode = "0600"
""")
    config = load_config(path)
    wss, unix = config.listeners
    assert wss.protocol_versions == (4, 5)
    assert wss.allowed_origins == ("https://app.example.com", "http://[::1]:8080")
    assert (wss.allow_anonymous, unix.allow_anonymous) == (False, True)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml())
    assert load_config(again) == config


BAD_LISTENERS: list[tuple[str, str, str]] = [
    ("tls-without-certfile", 'type = "tls"\nkeyfile = "k.pem"',
     'listeners[0].certfile: expected a PEM file name (type is "tls"), got nothing'),
    ("wss-without-keyfile", 'type = "wss"\ncertfile = "c.pem"',
     'listeners[0].keyfile: expected a PEM file name (type is "wss"), got nothing'),
    ("certfile-on-tcp", 'type = "tcp"\ncertfile = "c.pem"',
     'listeners[0].certfile: only for tls and wss listeners (type is "tcp")'),
    ("require-certificate-on-ws", 'type = "ws"\nrequire_certificate = true',
     'listeners[0].require_certificate: only for tls and wss listeners (type is "ws")'),
    ("require-certificate-without-cafile",
     'type = "tls"\ncertfile = "c"\nkeyfile = "k"\nrequire_certificate = true',
     "listeners[0].cafile: expected the PEM file of the client certificates' authority "
     "(require_certificate is set), got nothing"),
    ("crlfile-without-cafile", 'type = "tls"\ncertfile = "c"\nkeyfile = "k"\ncrlfile = "r"',
     "listeners[0].cafile: expected the PEM file of the client certificates' authority "
     "(crlfile is set), got nothing"),
    ("identity-without-cafile",
     'type = "tls"\ncertfile = "c"\nkeyfile = "k"\nuse_identity_as_username = true',
     "listeners[0].cafile: expected the PEM file of the client certificates' authority "
     "(use_identity_as_username is set), got nothing"),
    ("bad-identity", 'type = "tls"\ncertfile = "c"\nkeyfile = "k"\n'
     'certificate_identity = "serial"',
     "listeners[0].certificate_identity: expected 'cn' or 'san_dns' or 'san_email', "
     'got "serial"'),
    ("bad-tls-version", 'type = "tls"\ncertfile = "c"\nkeyfile = "k"\ntls_version = "1.1"',
     "listeners[0].tls_version: expected '1.2' or '1.3', got \"1.1\""),
    ("unix-without-path", 'type = "unix"',
     'listeners[0].path: expected the socket file name (type is "unix"), got nothing'),
    ("unix-with-port", 'type = "unix"\npath = "/tmp/s"\nport = 1884',
     "listeners[0].port: not used by unix listeners (set path)"),
    ("path-on-tcp", 'type = "tcp"\npath = "/tmp/s"',
     'listeners[0].path: only for unix, ws and wss listeners (type is "tcp")'),
    ("ws-path-without-slash", 'type = "ws"\npath = "mqtt"',
     'listeners[0].path: expected an HTTP path starting with "/", got "mqtt"'),
    ("mode-on-tcp", 'type = "tcp"\nmode = "0600"',
     'listeners[0].mode: only for unix listeners (type is "tcp")'),
    ("mode-not-octal", 'type = "unix"\npath = "/tmp/s"\nmode = "rw-------"',
     'listeners[0].mode: expected octal permission bits such as "0660", got "rw-------"'),
    ("mode-as-integer", 'type = "unix"\npath = "/tmp/s"\nmode = 384',
     "listeners[0].mode: expected a string, got 384"),
    ("protocol-versions-empty", "protocol_versions = []",
     "listeners[0].protocol_versions: expected a non-empty list of distinct levels among "
     "3, 4 and 5, got []"),
    ("protocol-version-6", "protocol_versions = [4, 6]",
     "listeners[0].protocol_versions: expected a non-empty list of distinct levels among "
     "3, 4 and 5, got [4, 6]"),
    ("protocol-versions-repeated", "protocol_versions = [5, 5]",
     "listeners[0].protocol_versions: expected a non-empty list of distinct levels among "
     "3, 4 and 5, got [5, 5]"),
    ("protocol-versions-as-integer", "protocol_versions = 5",
     "listeners[0].protocol_versions: expected a list of integers, got 5"),
    ("protocol-versions-as-strings", 'protocol_versions = ["5"]',
     "listeners[0].protocol_versions: expected a list of integers, got ['5']"),
    ("allow-anonymous-as-string", 'allow_anonymous = "yes"',
     'listeners[0].allow_anonymous: expected true or false, got "yes"'),
    ("max-connections-negative", "max_connections = -1",
     "listeners[0].max_connections: expected an integer of at least 0, got -1"),
    ("auth-misspelt-source", 'auth = ["pasword_file"]',
     'listeners[0].auth: unknown name "pasword_file" (did you mean \'password_file\'?); '
     "expected names among 'password_file', 'webhook' and 'scram'"),
    ("auth-as-string", 'auth = "webhook"',
     "listeners[0].auth: expected a list of names among 'password_file', 'webhook' and "
     "'scram', got \"webhook\""),
    ("auth-repeated", 'auth = ["webhook", "webhook"]\n[auth]\nwebhook_url = "http://a/b"',
     "listeners[0].auth: expected distinct names, got ['webhook', 'webhook']"),
    ("auth-webhook-not-configured", 'auth = ["webhook"]',
     'listeners[0].auth: "webhook" is not configured (it needs auth.webhook_url)'),
    ("auth-scram-not-configured", 'password_file = "p"\nauth = ["password_file", "scram"]',
     'listeners[0].auth: "scram" is not configured (it needs auth.scram = true)'),
    ("auth-password-file-not-configured", 'auth = ["password_file"]',
     'listeners[0].auth: "password_file" is not configured (it needs '
     "listeners[0].password_file or auth.password_file)"),
    ("auth-empty-without-anonymous", 'host = "0.0.0.0"\nauth = []',
     "listeners[0].auth: an empty list accepts any username without a check; set "
     "allow_anonymous = true to mean that, or name a source"),
    ("no-source-without-anonymous", 'host = "0.0.0.0"\nname = "field"',
     "listeners[0]: listener field admits only authenticated clients (allow_anonymous is "
     "false, the default off the loopback address) but no authentication source applies to "
     "it: set a password file (listeners[0].password_file or auth.password_file), "
     "auth.webhook_url or use_identity_as_username, or allow_anonymous = true"),
    ("only-scram-without-password-file",
     'host = "0.0.0.0"\nauth = ["scram"]\n[auth]\nscram = true',
     "auth.password_file: expected the password file holding the SCRAM keys (auth.scram is "
     "true), got nothing"),
    ("allowed-origins-on-tcp", 'allowed_origins = ["https://app.example.com"]',
     'listeners[0].allowed_origins: only for ws and wss listeners (type is "tcp")'),
    ("allowed-origin-with-a-path", 'type = "ws"\nallowed_origins = ["https://app.example.com/"]',
     'listeners[0].allowed_origins: expected origins such as "https://app.example.com" '
     '(scheme://host[:port], no path) or "*", got "https://app.example.com/"'),
    ("allowed-origin-without-scheme", 'type = "ws"\nallowed_origins = ["app.example.com"]',
     'listeners[0].allowed_origins: expected origins such as "https://app.example.com" '
     '(scheme://host[:port], no path) or "*", got "app.example.com"'),
    ("allowed-origins-as-string", 'type = "ws"\nallowed_origins = "*"',
     'listeners[0].allowed_origins: expected a list of strings, got "*"'),
    ("password-file-left-out-of-auth",
     'password_file = "p"\nauth = ["webhook"]\n[auth]\nwebhook_url = "http://a/b"',
     "listeners[0].password_file: not used: listeners[0].auth names neither "
     "'password_file' nor 'scram'"),
    ("password-file-as-list", 'password_file = ["p"]',
     "listeners[0].password_file: expected a string, got ['p']"),
]


@pytest.mark.parametrize(("table", "message"), [case[1:] for case in BAD_LISTENERS],
                         ids=[case[0] for case in BAD_LISTENERS])
def test_bad_listener_is_refused_naming_file_key_and_expectation(
        tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "hbroker.toml"
    path.write_text(f"[[listeners]]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_two_unix_listeners_on_one_path_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "hbroker.toml"
    path.write_text('[[listeners]]\ntype = "unix"\npath = "/tmp/a.sock"\n'
                    '[[listeners]]\ntype = "unix"\npath = "/tmp/a.sock"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: listeners[1].path: /tmp/a.sock is already used by "
                               "listeners[0]")


def test_listener_authentication_sources_load_and_print_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "hbroker.toml"
    path.write_text("""
[[listeners]]
host = "0.0.0.0"
port = 1883
password_file = "field-passwords"
auth = ["password_file"]

[[listeners]]
port = 1884
auth = []

[[listeners]]
host = "0.0.0.0"
port = 1885

[auth]
password_file = "passwords"
webhook_url = "http://auth.example/mqtt"
""")
    config = load_config(path)
    field, local, default = config.listeners
    assert (field.password_file, field.auth) == ("field-passwords", ("password_file",))
    assert local.auth == ()
    assert (default.password_file, default.auth) == ("", AUTH_SOURCES)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml())
    assert load_config(again) == config


def test_scram_may_take_its_keys_from_a_listener_password_file_only(tmp_path: Path) -> None:
    path = tmp_path / "hbroker.toml"
    path.write_text('[[listeners]]\npassword_file = "p"\nauth = ["scram"]\n'
                    "[auth]\nscram = true\n")
    lc, = load_config(path).listeners
    assert (lc.password_file, lc.auth) == ("p", ("scram",))
