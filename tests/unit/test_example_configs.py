"""The configuration files shipped in examples/ load, and the gateway one sets every option."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from hbroker.cli import main
from hbroker.config import (
    SECTIONS,
    TLS_TYPES,
    Config,
    ListenerConfig,
    is_loopback,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
ACL_EXAMPLE = ROOT / "examples" / "acl.toml"
# hardened.toml names files that exist only once installed: checked below with them made.
HARDENED = ROOT / "examples" / "hardened.toml"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml")
                  if p not in (ACL_EXAMPLE, HARDENED))
GATEWAY = ROOT / "examples" / "gateway.toml"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configuration_passes_check_config(path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(path)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert parse_config(tomllib.loads(printed), "<printed>") == load_config(path)


def test_gateway_configuration_sets_every_option_with_a_comment() -> None:
    text = GATEWAY.read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    tables = [("listeners", ListenerConfig, data["listeners"][0]),
              *((name, cls, data[name]) for name, cls in SECTIONS.items())]
    for name, cls, table in tables:
        for f in dataclasses.fields(cls):
            assert f.name in table, f"examples/gateway.toml: [{name}] does not set {f.name}"
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[i - 1].startswith("#"), \
                f"examples/gateway.toml:{i + 1}: `{line}` has no comment above it"


def test_gateway_configuration_keeps_state_in_the_units_state_directory() -> None:
    config = load_config(GATEWAY)
    assert config.storage.backend == "sqlite"
    assert config.storage.path == "/var/lib/hbroker/hbroker.db"
    unit = (ROOT / "packaging" / "hbroker.service").read_text()
    assert "StateDirectory=hbroker" in unit
    assert "ConfigurationDirectory=hbroker" in unit


def test_example_acl_file_loads_and_means_what_its_comments_say(tmp_path: Path) -> None:
    from hbroker.auth.acl import load_acl

    acl = load_acl(ACL_EXAMPLE)
    assert acl.check("alice", "console", "$SYS/broker/uptime", "read")
    assert acl.check("alice", "console", "factory/#", "subscribe")
    # "#" would reach the denied maintenance/... topics: refused (docs/security.md).
    assert not acl.check("alice", "console", "#", "subscribe")
    assert not acl.check("alice", "console", "factory/x", "publish")
    assert not acl.check("alice", "console", "maintenance/reset", "read")
    assert acl.check("bob", "bob-1", "devices/bob/temp", "publish")
    assert not acl.check("bob", "bob-1", "devices/alice/temp", "publish")
    assert not acl.check("bob", "bob-1", "$SYS/broker/uptime", "read")
    assert acl.check("gw-north", "gw-north", "telemetry/gw-north/pump1", "publish")
    assert not acl.check("gw-north", "field-1", "telemetry/field-1/pump1", "publish")
    assert acl.check(None, "anything", "public/site1/status", "read")
    assert not acl.check(None, "anything", "public/#", "subscribe")
    # A broker configuration naming it passes check-config (which loads the ACL file too).
    config = tmp_path / "hbroker.toml"
    config.write_text(f'[acl]\nfile = "{ACL_EXAMPLE}"\n')
    assert main(["check-config", "-c", str(config)]) == 0


def hardened_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """examples/hardened.toml with its files where the test made them: a password file
    written by `hbroker passwd add`, the example ACL, state in `tmp_path`."""
    passwords = tmp_path / "passwords"
    assert main(["passwd", "add", str(passwords), "alice", "--password", "wonderland",
                 "--cost", "10"]) == 0
    capsys.readouterr()
    text = HARDENED.read_text()
    for installed, here in (("/etc/hbroker/passwords", str(passwords)),
                            ("/etc/hbroker/acl.toml", str(ACL_EXAMPLE)),
                            ("/var/lib/hbroker/", f"{tmp_path}/")):
        assert installed in text, installed
        text = text.replace(installed, here)
    config = tmp_path / "hardened.toml"
    config.write_text(text)
    return config


def test_hardened_configuration_passes_check_config_once_its_files_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = hardened_installed(tmp_path, capsys)
    assert main(["check-config", "-c", str(config)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert parse_config(tomllib.loads(printed), "<printed>") == load_config(config)
    # Without the password file it is refused, naming the key and the file.
    (tmp_path / "passwords").unlink()
    assert main(["check-config", "-c", str(config)]) == 2
    assert "auth.password_file" in capsys.readouterr().err


def test_hardened_configuration_comments_every_line() -> None:
    lines = HARDENED.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), \
                f"examples/hardened.toml:{i + 1}: `{line}` has no comment above it"


def test_hardened_configuration_is_what_docs_security_promises() -> None:
    config = load_config(HARDENED)
    by_port = {lc.port: lc for lc in config.listeners}
    tls, wss = by_port[8883], by_port[8884]
    assert (tls.type, wss.type) == ("tls", "wss")
    for lc in config.listeners:
        # Anonymous clients only where the network cannot reach.
        assert lc.allow_anonymous is is_loopback(lc.host), lc.label
        # Every client giving a username is checked against the password file.
        assert lc.auth == ("password_file",), lc.label
        if lc.type in TLS_TYPES:
            assert lc.certfile and lc.keyfile and lc.tls_version in ("1.2", "1.3")
        else:
            assert is_loopback(lc.host), f"{lc.label}: plain MQTT off the loopback address"
        assert 3 not in lc.protocol_versions
    assert tls.cafile and not tls.require_certificate  # client certificates: optional
    assert config.auth.password_file and config.acl.file and config.audit.file
    assert config.auth.failure_delay > 0
    assert not config.sessions.allow_zero_length_client_id
    defaults = Config()
    for key in ("max_connections", "max_packet_size", "max_keepalive", "connect_timeout"):
        assert getattr(config.limits, key) < getattr(defaults.limits, key), key
    assert config.limits.max_connections >= sum(lc.max_connections
                                                for lc in config.listeners
                                                if lc.max_connections)


def test_hardened_configuration_bounds_what_one_address_or_client_may_do() -> None:
    quotas = load_config(HARDENED).quotas
    assert quotas.max_connection_rate > 0 and quotas.max_publish_rate > 0
    assert quotas.max_publish_bytes_rate > 0 and quotas.max_subscriptions > 0
    assert quotas.publish_rate_action == "refuse"
