"""A rule built on the in-process client: temperature readings above a threshold become
alerts.

    hbroker serve -c hbroker.toml --hook examples/rules/temperature_alerts.py:TemperatureAlerts

Subscribes to `sensors/+/temp` (payload: a number, e.g. `21.5`) and publishes each reading
above HBROKER_ALERT_THRESHOLD (default 30) to `alerts/<sensor>/temp`, QoS 1, as the client
`rule-temperature-alerts` with the username `rules`. It is a client like any other: the ACL
decides what it may read and publish (a refused alert is logged with its reason code), its
publish rate counts against [quotas], and its subscription and messages go through the hooks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from hbroker.hooks import Hook
from hbroker.inprocess import InProcessClient, Received

log = logging.getLogger("hbroker.rules.temperature")


class TemperatureAlerts(Hook):
    name = "temperature-alerts"

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold if threshold is not None else float(
            os.environ.get("HBROKER_ALERT_THRESHOLD", "30"))
        self.client: InProcessClient | None = None
        self.task: asyncio.Task | None = None

    def on_start(self, broker: Any) -> None:
        # on_start runs before the listeners accept clients; connecting waits for the loop.
        self.client = InProcessClient(broker, "rule-temperature-alerts", username="rules")
        self.task = broker.loop.create_task(self.run())

    async def run(self) -> None:
        assert self.client is not None
        await self.client.connect()
        code = await self.client.subscribe("sensors/+/temp", self.reading, qos=1)
        if code >= 0x80:
            log.warning("temperature alerts: subscription refused (%#04x)", code)
            return
        log.info("temperature alerts: watching sensors/+/temp above %g", self.threshold)

    def reading(self, message: Received) -> None:
        try:
            value = float(message.payload)
        except ValueError:
            return
        if value > self.threshold:
            sensor = message.topic.split("/")[1]
            asyncio.ensure_future(self.alert(f"alerts/{sensor}/temp", message.payload))

    async def alert(self, topic: str, payload: bytes) -> None:
        assert self.client is not None
        code = await self.client.publish(topic, payload, qos=1)
        if code >= 0x80:
            log.warning("temperature alert to %s refused (%#04x)", topic, code)

    def on_stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
