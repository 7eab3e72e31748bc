"""A random-kill loop: for a minute, one of three instances is killed with -9 every 1-4 s and
started again, while QoS 1 and QoS 2 publishers and subscribers with persistent sessions
reconnect to whichever instance is running. QoS 1: every acknowledged message arrives at
least once; QoS 2: exactly once.

Instances keep their state in SQLite (`sync`, the default): what an instance acknowledged,
to a publisher or to the cluster's stream, is on its disk when it is killed, and its sessions
are there when it starts again; a client that reconnects meanwhile is refused (0x88) until the
instance holding its session is back. Each session may queue a million messages, so that
nothing is dropped for a full queue while its subscriber is away.

Real processes: a 3-node nats-server cluster, three hbroker instances, raw MQTT 5 clients
(tests/cluster/roaming.py)."""

from __future__ import annotations

import itertools
import random
import time

import pytest
from instances import start_instances, stop_instances
from nats_cluster import NatsCluster
from roaming import RoamingPublisher, RoamingSubscriber

_ids = itertools.count(1)
LOOP = 60.0


# Not in `make test` yet: in about one run of two, one QoS 2 message of some 20,000 is
# delivered twice (once, one was lost); QoS 1 held in every run since the fixes of 2026-12-04.
@pytest.mark.fault_loop
@pytest.mark.timeout(400)
def test_instances_killed_at_random_under_qos1_and_qos2_load(nats_cluster: NatsCluster,
                                                             tmp_path):
    instances = start_instances(tmp_path, nats_cluster.urls, 3,
                                sections={"storage": {"backend": "sqlite"},
                                          # room for what arrives while a subscriber is away
                                          # (the default, 1,000, drops beyond: counted)
                                          "limits": {"max_queued_messages": 1_000_000,
                                                     "max_queued_bytes": 1 << 30}})
    run = f"rk{next(_ids)}-{random.randrange(1 << 30)}"
    subs = {qos: RoamingSubscriber(instances, f"{run}-sub{qos}", f"rk/{run}/q{qos}", qos)
            for qos in (1, 2)}
    pubs = {qos: RoamingPublisher(instances, f"{run}-pub{qos}", f"rk/{run}/q{qos}", qos)
            for qos in (1, 2)}
    try:
        for sub in subs.values():
            sub.start()
            assert sub.subscribed.wait(30), "no SUBACK"
        for pub in pubs.values():
            pub.start()
        kills = 0
        rng = random.Random(run)
        end = time.monotonic() + LOOP
        while time.monotonic() < end:
            time.sleep(rng.uniform(1, 4))  # the load's rhythm, not a wait for an event
            victim = rng.choice(instances)
            victim.kill()
            kills += 1
            victim.restart()
        for pub in pubs.values():
            pub.finish()
        report = {qos: (len(pubs[qos].acknowledged), len(pubs[qos].refused),
                        pubs[qos].resent, pubs[qos].sessions_lost, subs[qos].sessions_lost,
                        dict(pubs[qos].refusals), dict(subs[qos].refusals))
                  for qos in (1, 2)}
        for qos in (1, 2):
            assert len(pubs[qos].acknowledged) > 100, report
            missing = subs[qos].wait_for(pubs[qos].acknowledged)
            assert not missing, (f"QoS {qos}: {len(missing)} acknowledged messages lost "
                                 f"after {kills} kills: {sorted(missing)[:20]}; {report}; "
                                 f"packet ids reused: {subs[qos].reused_ids[:10]}")
        assert not subs[2].reused_ids, f"QoS 2 packet ids reused before PUBCOMP: " \
            f"{subs[2].reused_ids[:10]}; {report}"
        twice = sorted(n for n, count in subs[2].received.items() if count > 1)
        assert not twice, f"QoS 2 delivered more than once: {twice[:20]}; {report}"
        for sub in subs.values():
            sub.finish()
    finally:
        for client in (*pubs.values(), *subs.values()):
            client.stopping.set()
        stop_instances(instances)
