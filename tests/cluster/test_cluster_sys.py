"""`$SYS/broker/cluster/...` (hbroker.cluster.sys_topics): each instance's view of its cluster
as retained messages, following what happens to the cluster (an instance killed -9).

Real processes: a 3-node nats-server cluster, three hbroker instances, paho-mqtt."""

from __future__ import annotations

import time

from clients import PahoClient
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster


class SysView:
    """A subscriber to `$SYS/broker/cluster/#`: the latest value of each topic."""

    def __init__(self, client: PahoClient) -> None:
        self.client = client
        self.values: dict[str, str] = {}
        client.subscribe("$SYS/broker/cluster/#", 0)

    def pump(self, timeout: float) -> None:
        """Take what arrives within `timeout` seconds."""
        try:
            while True:
                msg = self.client.expect(timeout)
                self.values[msg.topic.removeprefix("$SYS/broker/cluster/")] = \
                    msg.payload.decode()
        except AssertionError:
            pass

    def wait(self, wanted: dict[str, str], timeout: float = 40) -> dict[str, str]:
        """Return the values once every topic of `wanted` has its value."""
        deadline = time.monotonic() + timeout
        while any(self.values.get(t) != v for t, v in wanted.items()):
            left = deadline - time.monotonic()
            assert left > 0, f"wanted {wanted}, got {self.values}"
            try:
                msg = self.client.expect(min(left, 2))
            except AssertionError:
                continue
            self.values[msg.topic.removeprefix("$SYS/broker/cluster/")] = msg.payload.decode()
        return self.values


def test_sys_topics_follow_the_cluster(nats_cluster: NatsCluster, tmp_path):
    instances = start_instances(tmp_path, nats_cluster.urls, 3,
                                sections={"sys": {"interval": 1}})
    hb1, hb2, hb3 = instances
    try:
        view = SysView(PahoClient(hb1.host, hb1.port, "sys-view"))
        values = view.wait({"node": "hb1", "state": "joined", "instances/alive": "3",
                            "instances/dead": "0"})
        host, port = values["nats/server"].split(":")
        assert host == "127.0.0.1" and int(port) == nats_cluster.nodes[0].port
        assert values["messages/refused"] == "0"
        # messages/forwarded counts what this instance sent to NATS
        pub = PahoClient(hb1.host, hb1.port, "sys-pub")
        for n in range(5):
            pub.publish("sys/test", str(n).encode(), 1)
        view.wait({"messages/forwarded": str(int(values["messages/forwarded"]) + 5)})
        pub.disconnect()
        hb3.kill()
        values = view.wait({"instances/alive": "2", "instances/dead": "1"})
        other = SysView(PahoClient(hb2.host, hb2.port, "sys-view2"))
        other.wait({"node": "hb2", "instances/alive": "2", "instances/dead": "1"})
        deadline = time.monotonic() + 10
        while True:  # one survivor declared it dead, the other did not
            declared = {view.values["instances/declared"], other.values["instances/declared"]}
            if declared == {"0", "1"}:
                break
            assert time.monotonic() < deadline, declared
            view.pump(0.5)
            other.pump(0.5)
        view.client.disconnect()
        other.client.disconnect()
    finally:
        stop_instances([hb1, hb2])
