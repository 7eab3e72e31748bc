"""The NATS cluster fixture is a real JetStream cluster: a replicated stream keeps every
acknowledged message through a SIGKILL of one node, and a restarted node catches up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats
from nats.js.api import StreamConfig
from nats_cluster import NatsCluster

DEADLINE = 30.0


async def until(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `probe` until it is true (each probe is a request to the cluster)."""
    deadline = time.monotonic() + DEADLINE
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


async def stream_leader(js: nats.js.JetStreamContext, stream: str) -> str | None:
    try:
        info = await js.stream_info(stream)
    except (TimeoutError, nats.errors.Error):
        return None
    return info.cluster.leader if info.cluster else None


async def publish_all(js: nats.js.JetStreamContext, subject: str, payloads: list[bytes]
                      ) -> None:
    for payload in payloads:
        ack = await js.publish(subject, payload, timeout=5)
        assert ack.stream


async def jetstream_with_stream(cluster: NatsCluster, name: str
                                ) -> tuple[nats.NATS, nats.js.JetStreamContext]:
    """A client of the cluster (reconnecting to any node) and a new R3 stream `name` on
    the subjects `name.>` (lower case)."""
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"],
                                     num_replicas=3))
    return nc, js


async def read_all(js: nats.js.JetStreamContext, subject: str, count: int) -> list[bytes]:
    sub = await js.pull_subscribe(subject, durable=None)
    got: list[bytes] = []
    while len(got) < count:
        for msg in await sub.fetch(count - len(got), timeout=5):
            got.append(msg.data)
            await msg.ack()
    await sub.unsubscribe()
    return got


def test_replicated_stream_keeps_every_message_through_a_sigkill_of_its_leader(
        nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        nc, js = await jetstream_with_stream(nats_cluster, "SURVIVE")
        before = [f"before {i}".encode() for i in range(50)]
        await publish_all(js, "survive.a", before)
        leader = await stream_leader(js, "SURVIVE")
        assert leader in ("n1", "n2", "n3")
        nats_cluster.kill(int(leader[1:]) - 1)

        async def new_leader() -> bool:
            return await stream_leader(js, "SURVIVE") not in (None, leader)

        await until(new_leader, "a new stream leader after the SIGKILL")
        after = [f"after {i}".encode() for i in range(50)]
        await publish_all(js, "survive.a", after)
        assert await read_all(js, "survive.a", 100) == before + after
        info = await js.stream_info("SURVIVE")
        assert info.state.messages == 100
        await js.delete_stream("SURVIVE")
        await nc.close()

    asyncio.run(run())


def test_restarted_node_rejoins_and_catches_up_on_what_it_missed(
        nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        nc, js = await jetstream_with_stream(nats_cluster, "REJOIN")
        leader = await stream_leader(js, "REJOIN")
        follower = next(i for i, node in enumerate(nats_cluster.nodes) if node.name != leader)
        nats_cluster.stop(follower)
        await publish_all(js, "rejoin.x", [b"%d" % i for i in range(30)])
        nats_cluster.start(follower)  # returns once it is healthy: its JetStream current
        node = nats_cluster.nodes[follower]

        async def caught_up() -> bool:
            status, jsz = node.monitor("/jsz?streams=true")
            streams = [stream for account in (jsz or {}).get("account_details", [])
                       for stream in account.get("stream_detail", [])
                       if stream["name"] == "REJOIN"]
            return status == 200 and bool(streams) and streams[0]["state"]["messages"] == 30

        await until(caught_up, f"{node.name}'s replica of REJOIN holding the 30 messages")
        info = await js.stream_info("REJOIN")
        replicas = {peer.name: peer for peer in info.cluster.replicas or []}
        assert node.name in replicas or info.cluster.leader == node.name
        await js.delete_stream("REJOIN")
        await nc.close()

    asyncio.run(run())


def test_cluster_has_three_routed_jetstream_nodes(nats_cluster: NatsCluster) -> None:
    assert [node.name for node in nats_cluster.nodes] == ["n1", "n2", "n3"]
    assert nats_cluster.meta_leader() in ("n1", "n2", "n3")
    for node in nats_cluster.nodes:
        status, routez = node.monitor("/routez")
        assert status == 200
        assert {route["remote_name"] for route in routez["routes"]} == \
            {"n1", "n2", "n3"} - {node.name}
