"""hbroker.cluster.nats_connection against real nats-servers: each way the `[cluster]` table
authenticates, TLS with a client certificate, reconnection to a discovered server, and a
first connection that waits for NATS to come up."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys
import pytest
from integration.certs import make_pki
from nats_cluster import NatsCluster, free_port

from hbroker.cluster.nats_connection import NatsAuthenticationError, connect
from hbroker.config import ClusterConfig, parse_config

StartServer = Callable[..., NatsCluster]


def cluster_config(servers: list[str], **options: Any) -> ClusterConfig:
    """A [cluster] table, validated as a configuration file's would be."""
    table = {"backend": "nats", "servers": servers, "name": "hb-test", "connect_timeout": 2,
             "reconnect_wait": 0.1, **options}
    config = parse_config({"cluster": table}, "<test>").cluster
    assert config is not None
    return config


async def round_trip(nc: Any) -> bytes:
    """A message through the server: the connection really is usable."""
    sub = await nc.subscribe("hb.check")
    await nc.publish("hb.check", b"ping")
    msg = await sub.next_msg(timeout=5)
    await sub.unsubscribe()
    return msg.data


def connection_names(cluster: NatsCluster) -> set[str]:
    names = set()
    for node in cluster.nodes:
        status, connz = node.monitor("/connz")
        assert status == 200
        names |= {c.get("name", "") for c in connz["connections"]}
    return names


def test_plain_connection_carries_the_node_name_and_reaches_jetstream(
        nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        nc = await connect(cluster_config(nats_cluster.urls), name="hb-test/routing")
        assert nc.is_connected
        assert await round_trip(nc) == b"ping"
        assert "hb-test/routing" in connection_names(nats_cluster)
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        await nc.close()

    asyncio.run(run())


def test_user_and_password_are_accepted_and_a_wrong_password_raises(
        nats_server_with: StartServer) -> None:
    server = nats_server_with(authorization={"user": "hbroker", "password": "s3cret"})

    async def run() -> None:
        nc = await connect(cluster_config(server.urls, user="hbroker", password="s3cret"),
                           name="hb-test")
        assert await round_trip(nc) == b"ping"
        await nc.close()
        with pytest.raises(NatsAuthenticationError, match="refused the credentials"):
            await connect(cluster_config(server.urls, user="hbroker", password="wrong"),
                          name="hb-test")

    asyncio.run(run())


def test_token_is_accepted_and_a_wrong_token_raises(nats_server_with: StartServer) -> None:
    server = nats_server_with(authorization={"token": "t0ken"})

    async def run() -> None:
        nc = await connect(cluster_config(server.urls, token="t0ken"), name="hb-test")
        assert await round_trip(nc) == b"ping"
        await nc.close()
        with pytest.raises(NatsAuthenticationError):
            await connect(cluster_config(server.urls, token="other"), name="hb-test")
        with pytest.raises(NatsAuthenticationError):  # no credentials at all
            await connect(cluster_config(server.urls), name="hb-test")

    asyncio.run(run())


def test_nkey_seed_file_signs_the_servers_challenge(nats_server_with: StartServer,
                                                    tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "hbroker.nk"
    seed_file.write_bytes(seed)
    server = nats_server_with(authorization={"users": [{"nkey": public}]})

    async def run() -> None:
        nc = await connect(cluster_config(server.urls, nkey_seed_file=str(seed_file)),
                           name="hb-test")
        assert await round_trip(nc) == b"ping"
        await nc.close()

    asyncio.run(run())


def test_tls_with_a_client_certificate(nats_server_with: StartServer, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = nats_server_with(tls={"cert_file": str(pki.server.cert),
                                   "key_file": str(pki.server.key),
                                   "ca_file": str(pki.ca.cert), "verify": True})
    urls = [url.replace("nats://", "tls://") for url in server.urls]

    async def run() -> None:
        nc = await connect(cluster_config(urls, tls_ca=str(pki.ca.cert),
                                          tls_cert=str(pki.client.cert),
                                          tls_key=str(pki.client.key)), name="hb-test")
        assert await round_trip(nc) == b"ping"
        _, connz = server.nodes[0].monitor("/connz?auth=true")
        [connection] = connz["connections"]
        assert connection["tls_version"].startswith("1.")
        assert connection["tls_peer_certs"][0]["subject"] == "CN=alice"
        await nc.close()
        # A server whose certificate another authority signed is not trusted.
        with pytest.raises(NatsAuthenticationError, match="certificate did not verify"):
            await connect(cluster_config(urls, tls_ca=str(pki.other_ca.cert),
                                         tls_cert=str(pki.client.cert),
                                         tls_key=str(pki.client.key)), name="hb-test")

    asyncio.run(run())


def test_lost_server_is_replaced_by_one_the_cluster_announced(
        nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        disconnected, reconnected = asyncio.Event(), asyncio.Event()

        async def on_disconnected() -> None:
            disconnected.set()

        async def on_reconnected() -> None:
            reconnected.set()

        async def on_error(exc: Exception) -> None:
            pass  # the refused reconnections to the killed node

        only_first = [nats_cluster.urls[0]]  # the others are learnt from the cluster
        nc = await connect(cluster_config(only_first), name="hb-test",
                           on_disconnected=on_disconnected, on_reconnected=on_reconnected,
                           on_error=on_error)
        nats_cluster.kill(0)
        await asyncio.wait_for(disconnected.wait(), 10)
        await asyncio.wait_for(reconnected.wait(), 10)
        assert nc.connected_url.port in (node.port for node in nats_cluster.nodes[1:])
        assert await round_trip(nc) == b"ping"
        await nc.close()

    asyncio.run(run())


def test_first_connection_waits_for_nats_to_come_up(nats_server_with: StartServer) -> None:
    server = nats_server_with()
    server.stop(0)

    async def run() -> None:
        errors: list[Exception] = []
        failed = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            errors.append(exc)
            failed.set()

        connecting = asyncio.create_task(
            connect(cluster_config(server.urls), name="hb-test", on_error=on_error))
        await asyncio.wait_for(failed.wait(), 10)
        assert not connecting.done()
        await asyncio.to_thread(server.start, 0)
        nc = await asyncio.wait_for(connecting, 10)
        assert await round_trip(nc) == b"ping"
        assert errors and all(isinstance(e, OSError) for e in errors), errors  # refused
        await nc.close()

    asyncio.run(run())


def test_on_error_raising_gives_up_the_first_connection() -> None:
    class GiveUp(Exception):
        pass

    async def on_error(exc: Exception) -> None:
        assert isinstance(exc, OSError)  # nothing listens
        raise GiveUp

    async def run() -> None:
        with pytest.raises(GiveUp):
            await connect(cluster_config([f"nats://127.0.0.1:{free_port()}"]), name="hb-test",
                          on_error=on_error)

    asyncio.run(run())
