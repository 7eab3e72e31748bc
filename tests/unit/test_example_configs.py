"""The configuration files shipped in examples/ load, and the gateway one sets every option."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from hbroker.cli import main
from hbroker.config import SECTIONS, ListenerConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
ACL_EXAMPLE = ROOT / "examples" / "acl.toml"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml") if p != ACL_EXAMPLE)
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
