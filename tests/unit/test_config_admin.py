"""The `[admin]` table: the admin listener's address, TLS, tokens and who may read what.

Mistakes are ConfigErrors naming the file and the key, compared as whole messages (as in
test_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import load_error, write

from hbroker.admin.tokens import hash_token, new_token, parse_hash
from hbroker.cli import main
from hbroker.config import AdminConfig, AdminToken, Config, load_config

HASH = hash_token("s3cret-token")


def test_admin_listener_is_off_by_default_on_loopback_port_9883() -> None:
    admin = Config().admin
    assert admin == AdminConfig()
    assert (admin.enabled, admin.host, admin.port) == (False, "127.0.0.1", 9883)
    assert (admin.metrics_auth, admin.allow_insecure, admin.tokens) == (False, False, ())


def test_tokens_load_as_tables_with_their_roles(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[admin]
enabled = true
metrics_auth = true

[[admin.tokens]]
name = "prometheus"
hash = "{HASH}"

[[admin.tokens]]
name = "operator"
hash = "{HASH}"
role = "admin"
""")
    admin = load_config(path).admin
    assert admin.tokens == (AdminToken("prometheus", HASH, "read"),
                            AdminToken("operator", HASH, "admin"))


def test_effective_configuration_with_tokens_loads_back_equal(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[admin]
enabled = true
host = "::1"
port = 0
tokens = [{{ name = "prometheus", hash = "{HASH}" }}]
""")
    config = load_config(path)
    again = load_config(write(tmp_path, config.to_toml()))
    assert again == config
    assert 'tokens = [{ name = "prometheus", hash = "' in config.to_toml()


def test_non_loopback_address_loads_with_tls_or_allow_insecure(tmp_path: Path) -> None:
    tls = load_config(write(tmp_path, '[admin]\nenabled = true\nhost = "0.0.0.0"\n'
                                      'certfile = "a.pem"\nkeyfile = "a.key"\n'))
    assert tls.admin.certfile == "a.pem"
    plain = load_config(write(tmp_path, '[admin]\nenabled = true\nhost = "0.0.0.0"\n'
                                        "allow_insecure = true\n"))
    assert plain.admin.allow_insecure
    disabled = load_config(write(tmp_path, '[admin]\nhost = "0.0.0.0"\n'))
    assert not disabled.admin.enabled  # nothing listens: nothing to refuse


BAD = [
    ("non-loopback-without-tls", '[admin]\nenabled = true\nhost = "0.0.0.0"\n',
     'admin.host: "0.0.0.0" is not a loopback address: the admin listener needs '
     "admin.certfile and admin.keyfile (HTTPS) there, or admin.allow_insecure = true"),
    ("certfile-without-keyfile", '[admin]\ncertfile = "a.pem"\n',
     "admin.keyfile: expected a PEM file name (admin.certfile is set), got nothing"),
    ("keyfile-without-certfile", '[admin]\nkeyfile = "a.key"\n',
     "admin.certfile: expected a PEM file name (admin.keyfile is set), got nothing"),
    ("cafile-without-certfile", '[admin]\ncafile = "ca.pem"\n',
     "admin.certfile: expected a PEM file name (admin.cafile is set), got nothing"),
    ("port-too-large", "[admin]\nport = 65536\n",
     "admin.port: expected an integer from 0 to 65535, got 65536"),
    ("body-limit-too-small", "[admin]\nmax_body_size = 10\n",
     "admin.max_body_size: expected an integer from 1024 to 268435456, got 10"),
    ("metrics-auth-without-tokens", "[admin]\nenabled = true\nmetrics_auth = true\n",
     "admin.tokens: expected at least one token (admin.metrics_auth is true), got none"),
    ("tokens-not-tables", '[admin]\ntokens = "abc"\n',
     'admin.tokens: expected a list of tables ([[admin.tokens]]), got "abc"'),
    ("token-unknown-key", '[[admin.tokens]]\nname = "a"\ntoken = "x"\n',
     "unknown key 'admin.tokens[0].token' (expected one of: name, hash, role)"),
    ("token-without-name", f'[[admin.tokens]]\nhash = "{HASH}"\n',
     "admin.tokens[0].name: expected a name, got nothing"),
    ("token-bad-role", f'[[admin.tokens]]\nname = "a"\nhash = "{HASH}"\nrole = "root"\n',
     "admin.tokens[0].role: expected 'read' or 'admin', got \"root\""),
    ("token-in-clear", '[[admin.tokens]]\nname = "a"\nhash = "s3cret-token"\n',
     'admin.tokens[0].hash: expected scrypt$N$r$p$SALT$KEY as `hbroker token` prints it, '
     'got "s3cret-token"'),
    ("token-names-repeat", f'[[admin.tokens]]\nname = "a"\nhash = "{HASH}"\n'
                           f'[[admin.tokens]]\nname = "a"\nhash = "{HASH}"\n',
     'admin.tokens[1].name: "a" names another token already'),
]


@pytest.mark.parametrize(("snippet", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_admin_table_is_refused_naming_file_and_key(tmp_path: Path, snippet: str,
                                                        message: str) -> None:
    path = write(tmp_path, snippet)
    assert load_error(path) == f"{path}: {message}"


def test_token_hash_is_salted_and_matches_only_its_token() -> None:
    token = new_token()
    first, second = hash_token(token), hash_token(token)
    assert first != second  # a salt of its own
    assert token not in first
    assert parse_hash(first).matches(token) and parse_hash(second).matches(token)
    assert not parse_hash(first).matches(token + "x")
    assert first.startswith("scrypt$16384$8$1$")


def test_token_command_prints_a_token_and_an_entry_that_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--name", "grafana", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    token, _, entry = out.partition("\n\n")
    assert token and token not in entry
    path = write(tmp_path, "[admin]\nenabled = true\n" + entry)
    (loaded,) = load_config(path).admin.tokens
    assert (loaded.name, loaded.role) == ("grafana", "admin")
    assert parse_hash(loaded.hash).matches(token)


def test_check_config_shows_the_admin_table(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[admin]\nenabled = true\nport = 9100\n")
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[admin]\nenabled = true\nhost = \"127.0.0.1\"\nport = 9100\n" in out
