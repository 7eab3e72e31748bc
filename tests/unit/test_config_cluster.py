"""The `[cluster]` table: absent means not clustered; present, it is validated like every
other table (`FILE: KEY: what was expected, got VALUE`), and its secrets are not printed."""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from pathlib import Path

import pytest

from hbroker.cli import main
from hbroker.config import (
    REDACTED,
    ClusterConfig,
    Config,
    ConfigError,
    load_config,
    parse_config,
)

MINIMAL = '[cluster]\nbackend = "nats"\nservers = ["nats://127.0.0.1:4222"]\n'


def write(tmp_path: Path, text: str, name: str = "hbroker.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_without_a_cluster_table_the_broker_is_not_clustered(tmp_path: Path) -> None:
    assert Config().cluster is None
    assert load_config(write(tmp_path, "[sys]\ninterval = 5\n")).cluster is None
    assert "[cluster]" not in Config().to_toml()


def test_minimal_cluster_table_takes_the_defaults_and_the_host_name(tmp_path: Path) -> None:
    cluster = load_config(write(tmp_path, MINIMAL)).cluster
    assert cluster == ClusterConfig(backend="nats", servers=("nats://127.0.0.1:4222",),
                                    name=socket.gethostname().split(".")[0])
    assert cluster.stream_replicas == 3
    assert cluster.subject_prefix == ""
    assert cluster.connect_timeout == 2.0


def test_every_cluster_option_set_loads_those_values(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    path = write(tmp_path, f"""
[cluster]
backend = "nats"
servers = ["tls://nats1.example:4222", "tls://nats2.example", "nats://[::1]:4223"]
name = "gw-1"
user = "hbroker"
password = "s3cret"
tls_ca = "{tmp_path / 'ca.pem'}"
tls_cert = "{tmp_path / 'client.pem'}"
tls_key = "{tmp_path / 'client.key'}"
tls_handshake_first = true
subject_prefix = "hb.mqtt"
stream_replicas = 5
connect_timeout = 0.5
reconnect_wait = 0.25
ping_interval = 2
""")
    cluster = load_config(path).cluster
    assert cluster == ClusterConfig(
        backend="nats", servers=("tls://nats1.example:4222", "tls://nats2.example",
                                 "nats://[::1]:4223"),
        name="gw-1", user="hbroker", password="s3cret", tls_ca=str(tmp_path / "ca.pem"),
        tls_cert=str(tmp_path / "client.pem"), tls_key=str(tmp_path / "client.key"),
        tls_handshake_first=True, subject_prefix="hb.mqtt", stream_replicas=5,
        connect_timeout=0.5, reconnect_wait=0.25, ping_interval=2.0)


@pytest.mark.parametrize("credentials", ['token = "t0ken"', 'nkey_seed_file = "{dir}/u.nk"',
                                         'creds_file = "{dir}/u.creds"'])
def test_each_other_way_to_authenticate_loads(tmp_path: Path, credentials: str) -> None:
    (tmp_path / "u.nk").write_text("SU...")
    (tmp_path / "u.creds").write_text("-----BEGIN NATS USER JWT-----")
    line = credentials.format(dir=tmp_path)
    cluster = load_config(write(tmp_path, MINIMAL + line + "\n")).cluster
    key, value = (part.strip().strip('"') for part in line.split("="))
    assert getattr(cluster, key) == value


def test_effective_cluster_table_loads_back_equal(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + 'user = "u"\npassword = "p \\" q"\n'))
    again = load_config(write(tmp_path, config.to_toml(), "effective.toml"))
    assert again == config
    assert again.cluster.password == 'p " q'


def test_check_config_shows_the_cluster_table_with_its_secrets_redacted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, MINIMAL + 'name = "n1"\nuser = "hbroker"\npassword = "s3cret"\n')
    assert main(["check-config", "-c", str(path)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "s3cret" not in printed
    table = tomllib.loads(printed)["cluster"]
    assert table["password"] == REDACTED
    assert table["token"] == ""  # unset: nothing to hide
    assert table["user"] == "hbroker"
    assert table["servers"] == ["nats://127.0.0.1:4222"]
    assert table["name"] == "n1"
    assert set(table) == {f.name for f in dataclasses.fields(ClusterConfig)}


def test_token_is_redacted_too() -> None:
    config = parse_config({"cluster": {"backend": "nats", "servers": ["nats://h"],
                                       "token": "t0ken"}}, "<test>")
    assert "t0ken" not in config.to_toml(redact=True)
    assert 'token = "t0ken"' in config.to_toml()


def test_a_change_to_the_cluster_table_needs_a_restart(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, MINIMAL))
    two = load_config(write(tmp_path, MINIMAL.replace("4222", "4223")))
    assert one.reload_changes(two) == ([], ["cluster.servers"])
    assert one.merge_reload(two).cluster == one.cluster
    plain = load_config(write(tmp_path, ""))
    assert plain.reload_changes(one) == ([], ["cluster"])
    assert one.reload_changes(plain) == ([], ["cluster"])
    assert plain.merge_reload(one).cluster is None
    assert one.merge_reload(plain).cluster == one.cluster


BAD_SNIPPETS: list[tuple[str, str, str]] = [
    # (id, [cluster] lines, the message after "FILE: ")
    ("no-backend", 'servers = ["nats://h:4222"]',
     "cluster.backend: expected 'nats', got nothing"),
    ("other-backend", 'backend = "redis"\nservers = ["nats://h:4222"]',
     "cluster.backend: expected 'nats', got \"redis\""),
    ("no-servers", 'backend = "nats"',
     "cluster.servers: expected one or more nats:// or tls:// URLs, got nothing"),
    ("empty-servers", 'backend = "nats"\nservers = []',
     "cluster.servers: expected one or more nats:// or tls:// URLs, got nothing"),
    ("servers-not-a-list", 'backend = "nats"\nservers = "nats://h:4222"',
     "cluster.servers: expected a list of strings, got \"nats://h:4222\""),
    ("server-other-scheme", 'backend = "nats"\nservers = ["http://h:4222"]',
     'cluster.servers: expected URLs such as "nats://nats1.example:4222" (nats:// or tls://, '
     'a host, an optional port), got "http://h:4222"'),
    ("server-without-scheme", 'backend = "nats"\nservers = ["h:4222"]',
     'cluster.servers: expected URLs such as "nats://nats1.example:4222" (nats:// or tls://, '
     'a host, an optional port), got "h:4222"'),
    ("server-bad-port", 'backend = "nats"\nservers = ["nats://h:99999"]',
     'cluster.servers: expected URLs such as "nats://nats1.example:4222" (nats:// or tls://, '
     'a host, an optional port), got "nats://h:99999"'),
    ("server-with-path", 'backend = "nats"\nservers = ["nats://h:4222/x"]',
     'cluster.servers: expected URLs such as "nats://nats1.example:4222" (nats:// or tls://, '
     'a host, an optional port), got "nats://h:4222/x"'),
    ("server-with-credentials", 'backend = "nats"\nservers = ["nats://u:secret@h:4222"]',
     "cluster.servers: credentials in a URL are not accepted (set cluster.user and "
     'cluster.password, or cluster.token), got "nats://...@h"'),
    ("name-with-dot", 'backend = "nats"\nservers = ["nats://h"]\nname = "gw.1"',
     "cluster.name: expected a NATS subject token (no '.', '*', '>' or whitespace), got "
     '"gw.1"'),
    ("name-with-space", 'backend = "nats"\nservers = ["nats://h"]\nname = "gw 1"',
     "cluster.name: expected a NATS subject token (no '.', '*', '>' or whitespace), got "
     '"gw 1"'),
    ("name-wildcard", 'backend = "nats"\nservers = ["nats://h"]\nname = ">"',
     "cluster.name: expected a NATS subject token (no '.', '*', '>' or whitespace), got "
     '">"'),
    ("prefix-wildcard", 'backend = "nats"\nservers = ["nats://h"]\nsubject_prefix = "hb.*"',
     "cluster.subject_prefix: expected NATS subject tokens separated by '.' (no '*', '>', "
     'whitespace or empty token), got "hb.*"'),
    ("prefix-empty-token", 'backend = "nats"\nservers = ["nats://h"]\nsubject_prefix = "hb."',
     "cluster.subject_prefix: expected NATS subject tokens separated by '.' (no '*', '>', "
     'whitespace or empty token), got "hb."'),
    ("user-without-password", 'backend = "nats"\nservers = ["nats://h"]\nuser = "u"',
     "cluster.password: expected the password of cluster.user, got nothing"),
    ("password-without-user", 'backend = "nats"\nservers = ["nats://h"]\npassword = "p"',
     "cluster.user: expected the user of cluster.password, got nothing"),
    ("user-and-token", 'backend = "nats"\nservers = ["nats://h"]\nuser = "u"\npassword = "p"\n'
     'token = "t"',
     "cluster.token: expected one way to authenticate to NATS, got cluster.user and "
     "cluster.token"),
    ("cert-without-key", 'backend = "nats"\nservers = ["nats://h"]\ntls_cert = "c.pem"',
     "cluster.tls_key: expected a PEM file (cluster.tls_cert is set), got nothing"),
    ("key-without-cert", 'backend = "nats"\nservers = ["nats://h"]\ntls_key = "c.key"',
     "cluster.tls_cert: expected a PEM file (cluster.tls_key is set), got nothing"),
    ("missing-creds-file", 'backend = "nats"\nservers = ["nats://h"]\n'
     'creds_file = "/nonexistent/u.creds"',
     'cluster.creds_file: file not found: "/nonexistent/u.creds"'),
    ("missing-ca", 'backend = "nats"\nservers = ["nats://h"]\ntls_ca = "/nonexistent/ca.pem"',
     'cluster.tls_ca: file not found: "/nonexistent/ca.pem"'),
    ("replicas-zero", 'backend = "nats"\nservers = ["nats://h"]\nstream_replicas = 0',
     "cluster.stream_replicas: expected an integer from 1 to 5, got 0"),
    ("replicas-six", 'backend = "nats"\nservers = ["nats://h"]\nstream_replicas = 6',
     "cluster.stream_replicas: expected an integer from 1 to 5, got 6"),
    ("connect-timeout-zero", 'backend = "nats"\nservers = ["nats://h"]\nconnect_timeout = 0',
     "cluster.connect_timeout: expected a number from 0.1 to 60, got 0"),
    ("unknown-key", 'backend = "nats"\nservers = ["nats://h"]\nserver = "nats://h"',
     "unknown key 'cluster.server' (did you mean 'servers'?)"),
]


@pytest.mark.parametrize(("lines", "message"), [case[1:] for case in BAD_SNIPPETS],
                         ids=[case[0] for case in BAD_SNIPPETS])
def test_bad_cluster_table_is_refused_naming_file_key_and_expectation(
        tmp_path: Path, lines: str, message: str) -> None:
    path = write(tmp_path, f"[cluster]\n{lines}\n")
    assert load_error(path) == f"{path}: {message}"


def test_cluster_table_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'cluster = "nats"\n')
    assert load_error(path) == f"{path}: cluster: expected a table, got 'nats'"


def test_host_name_that_is_no_token_must_be_replaced_by_a_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "gw*1.example.com")
    path = write(tmp_path, MINIMAL)
    assert load_error(path) == (f'{path}: cluster.name: the host name "gw*1" is not a NATS '
                                "subject token; set cluster.name")
