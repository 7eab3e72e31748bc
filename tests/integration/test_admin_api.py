"""The admin REST API of a real broker process, with real MQTT clients (paho, raw sockets,
mosquitto_sub): every resource, the tokens' roles, errors naming the field, kicks, retained
messages cleared, messages published, and the audit line of every mutating call."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_client import call, wait_for
from broker_process import BrokerProcess, free_port
from clients import PahoClient, RawClient
from hbroker_ext.codec import RECEIVE_MAXIMUM

from hbroker.admin.tokens import hash_token

ADMIN_TOKEN = "admin-token-for-the-api-tests"
READ_TOKEN = "read-token-for-the-api-tests"
ADMIN_HASH = hash_token(ADMIN_TOKEN)
READ_HASH = hash_token(READ_TOKEN)


class Api:
    """The API of one broker: `get(path)`, `delete(path)`, `post(path, body)` with the admin
    token unless another is given; each returns (status, JSON body)."""

    def __init__(self, broker: BrokerProcess, base: str) -> None:
        self.broker = broker
        self.base = base

    def get(self, path: str, token: str | None = READ_TOKEN) -> tuple[int, Any]:
        return call("GET", self.base + path, token)

    def delete(self, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        return call("DELETE", self.base + path, token)

    def post(self, path: str, body: Any = None, token: str | None = ADMIN_TOKEN,
             data: bytes | None = None) -> tuple[int, Any]:
        return call("POST", self.base + path, token, body=body, data=data)

    def ok(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return body


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    port = free_port()
    broker = BrokerProcess(tmp_path, {
        "storage": {"backend": "sqlite", "path": "data/hbroker.db"},
        "admin": {"enabled": True, "port": port, "max_body_size": 2048, "tokens": [
            {"name": "operator", "hash": ADMIN_HASH, "role": "admin"},
            {"name": "dashboard", "hash": READ_HASH}]}},
        listeners=[{"type": "tcp", "name": "main"}, {"type": "tcp", "name": "field"}])
    yield Api(broker, f"http://127.0.0.1:{port}/api/v1")
    assert broker.stop() == 0, broker.log()


def field_port(api: Api) -> int:
    return api.broker.listeners[1]["port"]


def test_clients_are_listed_in_pages_and_filtered(api: Api) -> None:
    b = api.broker
    clients = [PahoClient(b.host, b.port, "plant-a1", version=5),
               PahoClient(b.host, b.port, "plant-a2", version=4, username="alice"),
               PahoClient(b.host, field_port(api), "plant-b1", version=5),
               PahoClient(b.host, b.port, "office-1", version=5, username="alice")]
    try:
        everyone = api.ok("/clients")
        ids = [c["client_id"] for c in everyone["items"]]
        assert ids == ["office-1", "plant-a1", "plant-a2", "plant-b1"]
        assert everyone["total"] == 4 and everyone["next"] is None
        first = api.ok("/clients?limit=3")
        assert [c["client_id"] for c in first["items"]] == ids[:3]
        assert first["next"] == "plant-a2"
        rest = api.ok(f"/clients?limit=3&after={first['next']}")
        assert [c["client_id"] for c in rest["items"]] == ["plant-b1"]
        assert rest["next"] is None
        assert [c["client_id"] for c in api.ok("/clients?prefix=plant-a")["items"]] \
            == ["plant-a1", "plant-a2"]
        assert [c["client_id"] for c in api.ok("/clients?listener=field")["items"]] \
            == ["plant-b1"]
        assert [c["client_id"] for c in api.ok("/clients?protocol=3.1.1")["items"]] \
            == ["plant-a2"]
        assert [c["client_id"] for c in api.ok("/clients?username=alice")["items"]] \
            == ["office-1", "plant-a2"]
        one = everyone["items"][2]
        assert one["listener"] == "main" and one["protocol"] == "3.1.1"
        assert one["username"] == "alice" and one["peer"].startswith("127.0.0.1:")
        status, body = api.get("/clients?protocol=6")
        assert status == 400 and body["field"] == "protocol", body
        status, body = api.get("/clients?limit=0")
        assert status == 400 and body["field"] == "limit", body
        status, body = api.get("/clients/nobody")
        assert status == 404 and "nobody" in body["error"]
    finally:
        for c in clients:
            c.disconnect()


def test_client_detail_shows_its_subscriptions_inflight_and_queue(api: Api) -> None:
    b = api.broker
    # A subscriber that takes at most 2 QoS 1 messages at once and acknowledges none.
    slow = RawClient(b.host, b.port)
    slow.connect("slow-reader", properties={RECEIVE_MAXIMUM: 2})
    slow.subscribe("jobs/#", qos=1)
    slow.subscribe("$share/workers/tasks/+", qos=0, packet_id=2)
    publisher = PahoClient(b.host, b.port, "dispatcher")
    try:
        for i in range(5):
            publisher.publish(f"jobs/{i}", b"x" * 10, qos=1)
        for _ in range(2):
            assert slow.recv_type(3).topic.startswith("jobs/")
        detail = wait_for(lambda: (d := api.ok("/clients/slow-reader"))["queued"] == 3 and d,
                          "three deliveries queued behind the window")
        assert detail["inflight"] == 2 and detail["subscriptions"] == 2
        session = detail["session"]
        assert session["inflight_maximum"] == 2 and session["queued_bytes"] == 30
        assert [(s["topic_filter"], s["qos"], s["shared_group"])
                for s in session["subscription_list"]] == [
            ("$share/workers/tasks/+", 0, "workers"), ("jobs/#", 1, None)]
    finally:
        slow.close()
        publisher.disconnect()


def test_kick_disconnects_a_paho_client_with_administrative_action(api: Api) -> None:
    b = api.broker
    victim = PahoClient(b.host, b.port, "to-be-kicked", version=5)
    status, body = api.delete("/clients/to-be-kicked", token=READ_TOKEN)
    assert status == 403 and "admin" in body["error"]
    assert not victim.disconnected.is_set()
    status, body = api.delete("/clients/to-be-kicked")
    assert status == 200 and body == {"kicked": "to-be-kicked"}
    assert victim.disconnected.wait(10)
    assert victim.disconnect_reason.value == 0x98  # Administrative action
    wait_for(lambda: not api.ok("/clients?prefix=to-be")["items"], "the client gone")
    assert api.delete("/clients/to-be-kicked")[0] == 404
    victim.client.loop_stop()
    b.wait_log(r"hbroker\.audit: admin call token=operator method=DELETE "
               r"path=/api/v1/clients/to-be-kicked status=200 result=ok .*client_id=to-be")
    b.wait_log(r"hbroker\.audit: admin call token=dashboard method=DELETE "
               r"path=/api/v1/clients/to-be-kicked status=403 result=")


def test_kick_closes_a_3_1_1_client_at_once(api: Api) -> None:
    b = api.broker
    raw = RawClient(b.host, b.port, version=4)
    raw.connect("old-device")
    assert api.delete("/clients/old-device")[0] == 200
    assert raw.closed_by_broker() == []  # 3.1.1 has no DISCONNECT from the server


def test_sessions_are_listed_shown_and_discarded(api: Api) -> None:
    b = api.broker
    keeper = PahoClient(b.host, b.port, "keeper", session_expiry=3600)
    keeper.subscribe("keep/#", qos=1)
    keeper.disconnect()
    online = PahoClient(b.host, b.port, "online-one", session_expiry=60)
    try:
        offline = wait_for(lambda: api.ok("/sessions?connected=false")["items"],
                           "the keeper's session offline")
        assert [s["client_id"] for s in offline] == ["keeper"]
        assert offline[0]["expiry_interval"] == 3600 and offline[0]["expires_in"] > 3000
        assert [s["client_id"] for s in api.ok("/sessions?connected=true")["items"]] \
            == ["online-one"]
        detail = api.ok("/sessions/keeper")
        assert detail["connected"] is False
        assert [s["topic_filter"] for s in detail["subscription_list"]] == ["keep/#"]
        assert api.get("/sessions?connected=maybe")[1]["field"] == "connected"
        status, body = api.delete("/sessions/keeper")
        assert status == 200 and body == {"discarded": "keeper"}
        assert api.get("/sessions/keeper")[0] == 404
        assert api.delete("/sessions/keeper")[0] == 404
        back = PahoClient(b.host, b.port, "keeper", clean=False, session_expiry=3600)
        assert not back.session_present
        back.disconnect()
        # Discarding the session of a connected client disconnects it first.
        assert api.delete("/sessions/online-one")[0] == 200
        assert online.disconnected.wait(10) and online.disconnect_reason.value == 0x98
        online.client.loop_stop()
        assert api.get("/sessions/online-one")[0] == 404
    finally:
        if not online.disconnected.is_set():
            online.disconnect()


def test_subscriptions_and_shared_groups_are_listed(api: Api) -> None:
    b = api.broker
    one = PahoClient(b.host, b.port, "worker-1")
    two = PahoClient(b.host, b.port, "worker-2")
    try:
        one.subscribe("$share/pool/jobs/#", qos=1)
        two.subscribe("$share/pool/jobs/#", qos=1)
        two.subscribe("status/+", qos=0, noLocal=True)
        subs = api.ok("/subscriptions")["items"]
        assert [(s["client_id"], s["topic_filter"]) for s in subs] == [
            ("worker-1", "$share/pool/jobs/#"), ("worker-2", "$share/pool/jobs/#"),
            ("worker-2", "status/+")]
        assert subs[2]["no_local"] is True and subs[0]["shared_filter"] == "jobs/#"
        page = api.ok("/subscriptions?limit=1")
        after = urllib.parse.quote(page["next"], safe="")
        assert [s["client_id"] for s in api.ok(f"/subscriptions?limit=1&after={after}")
                ["items"]] == ["worker-2"]
        assert len(api.ok("/subscriptions?client_id=worker-2")["items"]) == 2
        assert len(api.ok("/subscriptions?shared_group=pool")["items"]) == 2
        groups = api.ok("/shared-subscriptions")["items"]
        assert groups == [{"share": "$share/pool/jobs/#", "shared_group": "pool",
                           "topic_filter": "jobs/#", "members": ["worker-1", "worker-2"]}]
    finally:
        one.disconnect()
        two.disconnect()


def test_retained_messages_are_listed_read_and_cleared_for_new_subscribers(api: Api) -> None:
    b = api.broker
    publisher = PahoClient(b.host, b.port, "retainer")
    try:
        publisher.publish("plant/valve/1", b"open", qos=1, retain=True)
        publisher.publish("plant/valve/2", b"\xff\x00binary", qos=0, retain=True)
        publisher.publish("office/light", b"on", qos=1, retain=True)
        listed = wait_for(lambda: (r := api.ok("/retained?filter=plant/%23"))["total"] == 2
                          and r, "two retained messages under plant/")
        assert [m["topic"] for m in listed["items"]] == ["plant/valve/1", "plant/valve/2"]
        assert listed["items"][0]["payload"] == "open"
        assert listed["items"][1]["payload_encoding"] == "base64"
        one = api.ok("/retained/plant/valve/1")
        assert one["payload"] == "open" and one["qos"] == 1 and one["size"] == 4
        assert api.get("/retained/plant/valve/9")[0] == 404
        status, body = api.get("/retained?filter=plant/%23/x")
        assert status == 400 and body["field"] == "filter"
        assert api.delete("/retained/plant/valve/1", token=READ_TOKEN)[0] == 403
        status, body = api.delete("/retained/plant/valve/1")
        assert status == 200 and body == {"cleared": "plant/valve/1"}
        assert api.get("/retained/plant/valve/1")[0] == 404
        newcomer = PahoClient(b.host, b.port, "newcomer")
        try:
            newcomer.subscribe("plant/#", qos=1)
            got = newcomer.expect()
            assert (got.topic, got.payload) == ("plant/valve/2", b"\xff\x00binary")
            newcomer.expect_none()  # plant/valve/1 is gone
        finally:
            newcomer.disconnect()
        b.wait_log(r"hbroker\.audit: admin call token=operator method=DELETE "
                   r"path=/api/v1/retained/plant/valve/1 status=200 result=ok")
    finally:
        publisher.disconnect()


def test_a_retained_topic_with_an_empty_first_level_is_addressed_percent_encoded(
        api: Api) -> None:
    b = api.broker
    publisher = PahoClient(b.host, b.port, "slasher")
    try:
        publisher.publish("/lead//slash", b"x", qos=1, retain=True)
        assert api.ok("/retained/%2Flead/%2Fslash")["topic"] == "/lead//slash"
        assert api.delete("/retained/%2Flead/%2Fslash")[0] == 200
        assert api.ok("/retained?filter=%2Flead/%23")["items"] == []
    finally:
        publisher.disconnect()


def test_publish_reaches_mosquitto_sub(api: Api) -> None:
    b = api.broker
    sub = subprocess.Popen(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-V", "mqttv5",
                            "-i", "mosq-sub", "-t", "api/hello", "-q", "1", "-C", "1",
                            "-W", "20"], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: api.ok("/subscriptions?client_id=mosq-sub")["items"],
                 "mosquitto_sub subscribed", timeout=10)
        status, body = api.post("/publish", {"topic": "api/hello", "payload": "from the API",
                                             "qos": 1})
        assert status == 200 and body == {"reason_code": 0, "reason": "success"}
        out, _ = sub.communicate(timeout=20)
        assert out.strip() == "from the API"
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    status, body = api.post("/publish", {"topic": "api/b64", "payload": "AAEC",
                                         "encoding": "base64", "retain": True, "qos": 1})
    assert status == 200 and body["reason"] == "no matching subscribers"
    assert api.ok("/retained/api/b64")["payload"] == "AAEC"
    b.wait_log(r"hbroker\.audit: admin call token=operator method=POST path=/api/v1/publish "
               r"status=200 result=ok .*topic=api/hello qos=1 retain=False")


@pytest.mark.parametrize(("body", "field"), [
    ({"payload": "x"}, "topic"),
    ({"topic": "a/+"}, "topic"),
    ({"topic": "a", "qos": 3}, "qos"),
    ({"topic": "a", "qos": True}, "qos"),
    ({"topic": "a", "retain": "yes"}, "retain"),
    ({"topic": "a", "payload": 5}, "payload"),
    ({"topic": "a", "encoding": "base64", "payload": "*"}, "payload"),
    ({"topic": "a", "encoding": "latin-1"}, "encoding"),
    ({"topic": "a", "message_expiry_interval": -1}, "message_expiry_interval"),
    ({"topic": "a", "colour": "red"}, "colour"),
    ([1, 2], "body"),
])
def test_publish_refuses_bad_input_naming_the_field(api: Api, body: Any, field: str) -> None:
    status, answer = api.post("/publish", body)
    assert status == 400 and answer["field"] == field, answer
    assert answer["error"].startswith(f"{field}: ")


def test_tokens_roles_and_body_limit(api: Api) -> None:
    for path in ("/broker", "/clients", "/config"):
        status, body = api.get(path, token=None)
        assert status == 401 and "token" in body["error"]
        assert api.get(path, token="not-a-token")[0] == 401
        assert api.get(path, token=ADMIN_TOKEN)[0] == 200
    status, body = api.post("/publish", {"topic": "a"}, token=READ_TOKEN)
    assert status == 403 and body["error"] == ("token 'dashboard' has role 'read'; this "
                                               "needs 'admin'")
    assert api.post("/publish", {"topic": "a"}, token=None)[0] == 401
    status, body = api.post("/publish", data=b'{"topic": "big", "payload": "'
                            + b"x" * 4096 + b'"}')
    assert status == 413 and "2048" in body["error"]
    assert api.post("/publish", data=b"{not json")[1]["field"] == "body"
    status, body = api.get("/no-such-thing")
    assert status == 404 and "error" in body
    assert call("PUT", api.base + "/clients", ADMIN_TOKEN)[0] == 405
    api.broker.wait_log(r"hbroker\.audit: admin call token=\"\" method=POST "
                        r"path=/api/v1/publish status=401")
    api.broker.wait_log(r"hbroker\.audit: admin call token=operator method=POST "
                        r"path=/api/v1/publish status=413")


def test_broker_storage_listeners_and_configuration(api: Api) -> None:
    b = api.broker
    client = PahoClient(b.host, b.port, "status-check")
    try:
        status = api.ok("/broker")
        assert status["ready"] is True and status["clients_connected"] == 1
        assert status["readiness"] == {"listeners": "ok", "storage": "ok"}
        assert status["counters"]["connections_total"] >= 1
        assert set(status["dropped"]) >= {"queue_full", "expired", "quota"}
        storage = api.ok("/storage")
        assert storage["backend"] == "sqlite" and storage["durable"] is True
        assert storage["degraded"] is False and storage["location"].endswith("hbroker.db")
        listeners = api.ok("/listeners")["items"]
        assert [(x["name"], x["type"], x["serving"], x["clients"]) for x in listeners] == [
            ("main", "tcp", True, 1), ("field", "tcp", True, 0)]
        assert listeners[0]["address"] == f"127.0.0.1:{b.port}"
        config = api.ok("/config")
        assert config["admin"]["max_body_size"] == 2048
        assert [t["name"] for t in config["admin"]["tokens"]] == ["operator", "dashboard"]
        assert all(t["hash"] == "<redacted>" for t in config["admin"]["tokens"])
        text = json.dumps(config)
        assert ADMIN_HASH not in text and READ_HASH not in text
    finally:
        client.disconnect()


def test_configuration_secrets_are_redacted() -> None:
    from hbroker.admin.api_config import redacted_config
    from hbroker.config import AuthConfig, ClusterConfig, Config, StorageConfig

    config = Config(storage=StorageConfig(backend="postgres",
                                          dsn="postgresql://hb:s3cret@db:5432/hb"),
                    auth=AuthConfig(webhook_url="https://bot:pa55@auth.example/check"),
                    cluster=ClusterConfig(backend="nats", servers=("nats://127.0.0.1:4222",),
                                          user="hb", password="natspass", token="tok3n",
                                          name="a"))
    shown = redacted_config(config)
    text = json.dumps(shown)
    for secret in ("s3cret", "pa55", "natspass", "tok3n"):
        assert secret not in text
    assert shown["storage"]["dsn"] == "postgresql://hb:<redacted>@db:5432/hb"
    assert shown["auth"]["webhook_url"] == "https://bot:<redacted>@auth.example/check"
    assert shown["cluster"]["user"] == "hb" and shown["cluster"]["password"] == "<redacted>"


def test_mutating_calls_go_to_the_audit_file_too(tmp_path: Path) -> None:
    port = free_port()
    broker = BrokerProcess(tmp_path, {
        "audit": {"file": "audit.log"},
        "admin": {"enabled": True, "port": port, "tokens": [
            {"name": "operator", "hash": ADMIN_HASH, "role": "admin"},
            {"name": "dashboard", "hash": READ_HASH}]}})
    try:
        api = Api(broker, f"http://127.0.0.1:{port}/api/v1")
        assert api.post("/publish", {"topic": "audited", "payload": "x"})[0] == 200
        assert api.delete("/clients/nobody")[0] == 404
        assert api.ok("/broker")["ready"] is True  # a read: not audited
        path = tmp_path / "audit.log"
        records = wait_for(lambda: path.exists() and [
            json.loads(line) for line in path.read_text().splitlines()
            if '"admin_call"' in line] or None, "two admin_call records")
        assert [(r["token"], r["method"], r["path"], r["status"]) for r in records] == [
            ("operator", "POST", "/api/v1/publish", 200),
            ("operator", "DELETE", "/api/v1/clients/nobody", 404)]
        assert records[0]["topic"] == "audited" and records[0]["result"] == "ok"
        assert "nobody" in records[1]["result"]
    finally:
        assert broker.stop() == 0, broker.log()
