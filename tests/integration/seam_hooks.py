"""Hooks for tests/integration/test_extension_seam.py, loaded into the broker process with
`hbroker serve --hook tests/integration/seam_hooks.py:NAME`."""

from __future__ import annotations

import asyncio
from typing import Any

from hbroker.acknowledgement import HeldAck
from hbroker.hooks import ClientInfo, Hook
from hbroker.inprocess import InProcessClient, Received


class Gate(Hook):
    """Holds the acknowledgement of every QoS 1/2 PUBLISH to `gate/held/#` until a message
    is published to `gate/open`."""

    name = "gate"

    def __init__(self) -> None:
        self.held: list[HeldAck] = []

    def on_message_published(self, client: ClientInfo, msg: Any,
                             ack: HeldAck | None) -> None:
        if msg.topic == "gate/open":
            held, self.held = self.held, []
            for a in held:
                a.release()
        elif msg.topic.startswith("gate/held/") and ack is not None:
            ack.hold()
            self.held.append(ack)


class Probe(Hook):
    """An in-process client (username `rules`) that, for each message on
    `sensors/probe/cmd`, publishes QoS 1 to the topic its payload names and reports the
    PUBACK's reason code on `alerts/probe/result` as `TOPIC CODE`."""

    name = "probe"

    def __init__(self) -> None:
        self.client: InProcessClient | None = None

    def on_start(self, broker: Any) -> None:
        self.client = InProcessClient(broker, "probe", username="rules")
        broker.loop.create_task(self.run())

    async def run(self) -> None:
        assert self.client is not None
        await self.client.connect()
        await self.client.subscribe("sensors/probe/cmd", self.command, qos=1)
        await self.client.publish("alerts/probe/ready", b"1", qos=1, retain=True)

    def command(self, message: Received) -> None:
        asyncio.ensure_future(self.try_publish(message.payload.decode()))

    async def try_publish(self, topic: str) -> None:
        assert self.client is not None
        code = await self.client.publish(topic, b"probe", qos=1)
        await self.client.publish("alerts/probe/result", f"{topic} {code}", qos=1)
