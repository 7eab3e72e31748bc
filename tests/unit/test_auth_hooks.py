"""The auth hooks built from the configuration, their SIGHUP reload, and the read filter
of the broker's topic -> subscribers cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbroker.auth import build_hooks, reload_hooks
from hbroker.auth.hooks import AclHook, AuditHook, PasswordAuth, ScramAuth, WebhookAuth
from hbroker.auth.passwords import make_entry
from hbroker.broker import Broker, SubscriptionOptions
from hbroker.config import AclConfig, AuditConfig, AuthConfig, Config, ConfigError
from hbroker.hooks import ClientInfo, Hook, Hooks

READ_STATUS = """
[[rules]]
users = ["*"]
topics = ["#"]
actions = ["subscribe"]
permission = "allow"

[[rules]]
users = ["reader"]
topics = ["status/#"]
actions = ["read"]
permission = "allow"
"""


def config(tmp_path: Path, **auth: object) -> Config:
    passwords = tmp_path / "passwords"
    if not passwords.exists():
        passwords.write_text(make_entry("reader", b"pw", scram=True, ln=10).encode() + "\n")
    acl = tmp_path / "acl.toml"
    if not acl.exists():
        acl.write_text(READ_STATUS)
    return Config(auth=AuthConfig(password_file=str(passwords), **auth),  # type: ignore[arg-type]
                  acl=AclConfig(file=str(acl)),
                  audit=AuditConfig(file=str(tmp_path / "audit.jsonl")))


def test_nothing_configured_builds_no_hooks() -> None:
    assert build_hooks(Config()) == []


def test_hooks_follow_the_configuration(tmp_path: Path) -> None:
    hooks = build_hooks(config(tmp_path, scram=True, webhook_url="http://127.0.0.1:9/auth"))
    assert [type(h) for h in hooks] == [PasswordAuth, ScramAuth, WebhookAuth, AclHook,
                                        AuditHook]
    assert Hooks(hooks).auth_method_hooks.keys() == {"SCRAM-SHA-256"}


def test_unusable_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "passwords").write_text("reader:plain\n")
    with pytest.raises(ConfigError, match=r"auth.password_file: .*passwords:1"):
        build_hooks(config(tmp_path))
    (tmp_path / "passwords").unlink()
    (tmp_path / "acl.toml").write_text("[[rules]]\nusers = 1\ntopics = ['a']\n"
                                       "actions = ['read']\npermission = 'allow'\n")
    with pytest.raises(ConfigError, match=r"acl.file: .*acl.toml: rules\[0\].users"):
        build_hooks(config(tmp_path))


class Counter(Hook):
    name = "counter"

    def on_connected(self, client: ClientInfo) -> None:
        pass


def subscribe(broker: Broker, client_id: str, topic_filter: str) -> None:
    session = broker.new_session(client_id, 5)
    broker.sessions[client_id] = session
    broker.subscribe(session, topic_filter, SubscriptionOptions(1, False, False, 0, 0))


def readers(broker: Broker, topic: str) -> list[str]:
    return sorted(t[0] for t in broker._targets(topic)[0])


def test_read_rules_filter_the_cached_subscribers_and_a_reload_rebuilds_them(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    other = Counter()
    broker = Broker(cfg, Hooks([*build_hooks(cfg), other]))
    subscribe(broker, "r1", "#")
    subscribe(broker, "x1", "#")
    broker.remember_identity(ClientInfo("r1", "reader", "p", 5, "l"), True)
    broker.remember_identity(ClientInfo("x1", "someone", "p", 5, "l"), True)
    assert readers(broker, "status/a") == ["r1"]
    assert readers(broker, "other/a") == []
    (tmp_path / "acl.toml").write_text(READ_STATUS.replace('users = ["reader"]',
                                                           'users = ["*"]'))
    generation = broker.acl_generation
    assert reload_hooks(broker, cfg)
    assert broker.acl_generation == generation + 1
    assert readers(broker, "status/a") == ["r1", "x1"]
    assert other in broker.hooks.hooks  # hooks that are not auth hooks stay
    records = (tmp_path / "audit.jsonl").read_text()
    assert '"event": "reload"' in records


def test_a_client_that_comes_back_as_another_user_is_filtered_anew(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    broker = Broker(cfg, Hooks(build_hooks(cfg)))
    subscribe(broker, "c1", "#")
    broker.remember_identity(ClientInfo("c1", "someone", "p", 5, "l"), True)
    assert readers(broker, "status/a") == []
    broker.remember_identity(ClientInfo("c1", "reader", "p", 5, "l"), True)
    assert readers(broker, "status/a") == ["c1"]


def test_a_failed_reload_keeps_the_running_hooks(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    broker = Broker(cfg, Hooks(build_hooks(cfg)))
    before = broker.hooks
    (tmp_path / "acl.toml").write_text("not toml [")
    assert not reload_hooks(broker, cfg)
    assert broker.hooks is before
