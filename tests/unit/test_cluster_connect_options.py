"""How the `[cluster]` table becomes nats-py's connect options (hbroker.cluster.nats_connection);
tests/cluster/test_nats_connection.py connects with them to real servers."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from integration.certs import make_pki

from hbroker.cluster.nats_connection import connect_options, tls_context
from hbroker.config import ClusterConfig, parse_config


def cluster(**options: Any) -> ClusterConfig:
    table = {"backend": "nats", "servers": ["nats://127.0.0.1:4222"], "name": "n1", **options}
    config = parse_config({"cluster": table}, "<test>").cluster
    assert config is not None
    return config


def test_connection_is_named_reconnects_forever_and_uses_the_tables_timings() -> None:
    options = connect_options(cluster(connect_timeout=0.5, reconnect_wait=0.25,
                                      ping_interval=3), name="n1/routing")
    assert options == {
        "servers": ["nats://127.0.0.1:4222"], "name": "n1/routing", "connect_timeout": 0.5,
        "allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.25,
        "ping_interval": 3.0, "max_outstanding_pings": 2}


@pytest.mark.parametrize(("table", "expected"), [
    ({"user": "u", "password": "p"}, {"user": "u", "password": "p"}),
    ({"token": "t"}, {"token": "t"}),
    ({"nkey_seed_file": "{dir}/u.nk"}, {"nkeys_seed": "{dir}/u.nk"}),
    ({"creds_file": "{dir}/u.creds"}, {"user_credentials": "{dir}/u.creds"}),
])
def test_each_way_to_authenticate_gives_its_nats_option(
        tmp_path: Path, table: dict[str, str], expected: dict[str, str]) -> None:
    (tmp_path / "u.nk").write_text("SU")
    (tmp_path / "u.creds").write_text("JWT")
    table = {k: v.format(dir=tmp_path) for k, v in table.items()}
    options = connect_options(cluster(**table), name="n1")
    auth_keys = {"user", "password", "token", "nkeys_seed", "user_credentials"}
    assert {k: v for k, v in options.items() if k in auth_keys} == \
        {k: v.format(dir=tmp_path) for k, v in expected.items()}


def test_callbacks_are_passed_as_given() -> None:
    async def on_disconnected() -> None: ...
    async def on_reconnected() -> None: ...
    async def on_error(exc: Exception) -> None: ...

    options = connect_options(cluster(), name="n1", on_disconnected=on_disconnected,
                              on_reconnected=on_reconnected, on_error=on_error)
    assert options["disconnected_cb"] is on_disconnected
    assert options["reconnected_cb"] is on_reconnected
    assert options["error_cb"] is on_error


def test_no_tls_context_without_tls_options_or_tls_urls() -> None:
    assert tls_context(cluster()) is None
    assert "tls" not in connect_options(cluster(), name="n1")


def test_tls_url_gets_a_verifying_context_of_the_system_authorities() -> None:
    context = tls_context(cluster(servers=["tls://nats.example:4222"]))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_tls_options_give_a_context_with_the_ca_and_the_client_certificate(
        tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    config = cluster(tls_ca=str(pki.ca.cert), tls_cert=str(pki.client.cert),
                     tls_key=str(pki.client.key), tls_handshake_first=True)
    options = connect_options(config, name="n1")
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == \
        [((("commonName", "hbroker test CA main"),),)]
    assert options["tls_handshake_first"] is True
