"""`$SYS/broker/cluster/...`: the instance's view of its cluster, as retained messages.

Published like the broker's own `$SYS/broker/...` topics (`hbroker.sys_topics`): at join and
then every `sys.interval` seconds, each value only when it changed, on this instance only
(`$SYS` does not travel between instances).

Under `$SYS/broker/cluster/`:

- `node`: this instance's node name;
- `state`: `joined`, `disconnected` (no NATS connection: QoS 1/2 refused) or `fenced` (its
  lease not renewed: clients sent to another instance);
- `nats/server`: the NATS server it is connected to (host:port; empty when none);
- `instances/alive`: instances whose lease it saw renewed within the lease, itself included;
  `instances/dead`: those declared dead whose record is still in the bucket;
  `instances/declared`: those this one declared dead;
- `messages/forwarded`: messages sent to NATS; `messages/received`: messages from NATS
  published here; `messages/refused`: QoS 1/2 publishes refused (JetStream did not store them);
- `sessions/taken_over`, `sessions/handed_over`: sessions taken from and given to another
  instance;
- `wills/published`: wills of dead instances' clients published here.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from hbroker.sys_topics import SysPublisher, SysSource

if TYPE_CHECKING:
    from hbroker.cluster.routing import ClusterRouting


class ClusterSysPublisher(SysPublisher):
    """`$SYS/broker/cluster/...` of one instance (see the module docstring)."""

    def __init__(self, broker: SysSource, routing: ClusterRouting) -> None:
        super().__init__(broker)
        self.routing = routing

    def values(self, now: float) -> dict[str, str]:
        r = self.routing
        instances = r.leases.instances()
        alive = sum(1 for record in instances.values() if record.get("alive"))
        dead = sum(1 for record in instances.values() if record.get("state") == "dead")
        url = r.nc.connected_url if r.nc is not None and r.connected else None
        base = "$SYS/broker/cluster/"
        return {
            base + "node": r.node,
            base + "state": r.state,
            base + "nats/server": url.netloc if url is not None else "",
            base + "instances/alive": str(alive),
            base + "instances/dead": str(dead),
            base + "instances/declared": str(r.leases.declared),
            base + "messages/forwarded": str(r.forwarded),
            base + "messages/received": str(r.received),
            base + "messages/refused": str(r.refused),
            base + "sessions/taken_over": str(r.sessions.taken_over),
            base + "sessions/handed_over": str(r.sessions.handed_over),
            base + "wills/published": str(r.wills.published_for_others),
        }

    async def publishing(self) -> Any:
        """Publish now, then every `sys.interval` seconds, until the instance leaves."""
        interval = self.broker.config.sys.interval
        while not self.routing.leaving:
            self.publish_periodic(time.monotonic())
            await asyncio.sleep(interval)
