"""The NATS cluster fixture is a real JetStream cluster: a replicated stream keeps every
acknowledged message through a SIGKILL of one node, and a restarted node catches up."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import nats
from nats.js.api import StreamConfig
from nats_cluster import NatsCluster

DEADLINE = 30.0
_message_ids = itertools.count()


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
    """Publish each payload until JetStream acknowledges it. An attempt that got no answer
    (the client reconnecting to another node, a stream leader being elected) is sent again
    with the same `Nats-Msg-Id`, so the stream stores it once."""
    for payload in payloads:
        msg_id = {"Nats-Msg-Id": f"m{next(_message_ids)}"}
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                ack = await js.publish(subject, payload, timeout=2, headers=msg_id)
                break
            except (TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.NoStreamResponseError, nats.js.errors.APIError):
                if time.monotonic() > deadline:
                    raise
        assert ack.stream


async def make_stream(cluster: NatsCluster, name: str) -> str:
    """A new R3 stream `name` on the subjects `name.>` (lower case); its leader's name, once
    it has one."""
    nc = await nats.connect(cluster.urls)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"],
                                     num_replicas=3))
    leader: str | None = None

    async def led() -> bool:
        nonlocal leader
        leader = await stream_leader(js, name)
        return leader is not None

    await until(led, f"stream {name} electing a leader")
    await nc.close()
    assert leader is not None
    return leader


async def client_of(cluster: NatsCluster, *, besides: str
                    ) -> tuple[nats.NATS, nats.js.JetStreamContext]:
    """A client connected to a node other than `besides` (the one a test takes down: what
    is tested is the cluster, not the client's failover)."""
    urls = [node.url for node in cluster.nodes if node.name != besides]
    nc = await nats.connect(urls)
    return nc, nc.jetstream()


async def read_all(js: nats.js.JetStreamContext, subject: str, count: int) -> list[bytes]:
    """`count` messages of `subject` through a new durable pull consumer (replicated as its
    stream is: an ephemeral one has one replica, which may be placed on a dead node). A pull
    that got nothing, or a creation that got no answer (the consumer's leader being
    elected), is made again: creating the same durable consumer twice gives the one."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            sub = await js.pull_subscribe(subject, durable="reader")
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    got: list[bytes] = []
    while len(got) < count:
        try:
            msgs = await sub.fetch(count - len(got), timeout=2)
        except (TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            continue
        for msg in msgs:
            got.append(msg.data)
            await msg.ack()
    await sub.unsubscribe()
    return got


def test_replicated_stream_keeps_every_message_through_a_sigkill_of_its_leader(
        nats_cluster: NatsCluster) -> None:
    async def run() -> None:
        leader = await make_stream(nats_cluster, "SURVIVE")
        assert leader in ("n1", "n2", "n3")
        nc, js = await client_of(nats_cluster, besides=leader)
        before = [f"before {i}".encode() for i in range(50)]
        await publish_all(js, "survive.a", before)
        nats_cluster.kill(int(leader[1:]) - 1)
        # The node may have led the meta group too, which creating the consumer below needs.
        await asyncio.to_thread(nats_cluster.wait_ready)

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
        leader = await make_stream(nats_cluster, "REJOIN")
        follower = next(i for i, node in enumerate(nats_cluster.nodes) if node.name != leader)
        nc, js = await client_of(nats_cluster, besides=nats_cluster.nodes[follower].name)
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
