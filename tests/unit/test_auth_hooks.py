"""The auth hooks built from the configuration, their SIGHUP reload, and the read filter
of the broker's topic -> subscribers cache."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from hbroker.auth import build_hooks, reload_hooks
from hbroker.auth.hooks import AclHook, AuditHook, PasswordAuth, ScramAuth, WebhookAuth
from hbroker.auth.passwords import make_entry
from hbroker.auth.scram import METHOD, ScramClient
from hbroker.broker import Broker, SubscriptionOptions
from hbroker.config import (
    AclConfig,
    AuditConfig,
    AuthConfig,
    Config,
    ConfigError,
    ListenerConfig,
)
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
    return sorted(t.client_id for t in broker._targets(topic).normal)


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


# -- per-listener authentication sources ------------------------------------------------


def listener_setup(tmp_path: Path) -> tuple[Config, ListenerConfig, ListenerConfig,
                                              ListenerConfig]:
    """A broker-wide password file with "reader", a field listener with its own file holding
    "device" (with SCRAM keys), a listener restricted to the webhook, and a default one."""
    field_passwords = tmp_path / "field-passwords"
    field_passwords.write_text(make_entry("device", b"secret", scram=True, ln=10).encode()
                               + "\n")
    field = ListenerConfig(host="0.0.0.0", port=1883, name="field",
                           password_file=str(field_passwords))
    webhook_only = ListenerConfig(port=1884, name="webhook-only", auth=("webhook",))
    default = ListenerConfig(port=1885, name="default")
    cfg = dataclasses.replace(config(tmp_path, scram=True,
                                     webhook_url="http://127.0.0.1:9/auth"),
                              listeners=(field, webhook_only, default))
    return cfg, field, webhook_only, default


def client(username: str, listener: ListenerConfig | None) -> ClientInfo:
    return ClientInfo("c1", username, "127.0.0.1:5000", 5, "l", None, listener)


def decide(hook: Hook, info: ClientInfo, password: bytes) -> int | None:
    async def run() -> int | None:
        code = hook.authenticate(info, password)
        return code if code is None or isinstance(code, int) else await code

    return asyncio.run(run())


def hook_of(hooks: list[Hook], kind: type) -> Any:
    return next(h for h in hooks if isinstance(h, kind))


def test_a_listener_password_file_replaces_the_broker_wide_one_for_its_clients(
        tmp_path: Path) -> None:
    cfg, field, _, default = listener_setup(tmp_path)
    passwords = hook_of(build_hooks(cfg), PasswordAuth)
    assert decide(passwords, client("device", field), b"secret") == 0
    assert decide(passwords, client("reader", field), b"pw") == 0x86
    assert decide(passwords, client("device", default), b"secret") == 0x86
    assert decide(passwords, client("reader", default), b"pw") == 0
    # Without listener settings (a hook's own test client): the broker-wide file.
    assert decide(passwords, client("reader", None), b"pw") == 0


def test_sources_a_listener_leaves_out_are_not_asked(tmp_path: Path) -> None:
    cfg, field, webhook_only, _ = listener_setup(tmp_path)
    hooks = build_hooks(cfg)
    passwords, webhook = hook_of(hooks, PasswordAuth), hook_of(hooks, WebhookAuth)
    # The password file does not apply on the webhook-only listener: it has no say (None,
    # neither accepting nor refusing; the webhook decides), and no scrypt check is started.
    assert passwords.authenticate(client("reader", webhook_only), b"wrong") is None
    # The webhook applies there; it would be asked (an awaitable), but not on a listener
    # whose list leaves it out.
    restricted = dataclasses.replace(field, auth=("password_file",))
    assert webhook.authenticate(client("device", restricted), b"secret") is None
    asked = webhook.authenticate(client("reader", webhook_only), b"pw")
    assert not isinstance(asked, int)
    asked.close()  # type: ignore[attr-defined]


def scram_exchange(hook: ScramAuth, info: ClientInfo, password: str) -> int:
    scram = ScramClient(info.username or "", password)
    first = hook.enhanced_auth(info, METHOD, scram.first(), None)
    if first.reason_code != 0x18:
        return first.reason_code
    assert first.data is not None
    final = hook.enhanced_auth(info, METHOD, scram.final(first.data), first.state)
    if final.reason_code == 0:
        assert final.data is not None and scram.verify(final.data)
    return final.reason_code


def test_scram_uses_the_keys_of_the_listener_password_file_where_scram_applies(
        tmp_path: Path) -> None:
    cfg, field, webhook_only, default = listener_setup(tmp_path)
    scram = hook_of(build_hooks(cfg), ScramAuth)
    assert scram_exchange(scram, client("device", field), "secret") == 0
    assert scram_exchange(scram, client("reader", field), "pw") == 0x86
    assert scram_exchange(scram, client("reader", default), "pw") == 0
    # The webhook-only listener does not offer SCRAM: Bad authentication method.
    assert scram_exchange(scram, client("reader", webhook_only), "pw") == 0x8C


def test_sighup_rereads_listener_password_files(tmp_path: Path) -> None:
    cfg, field, _, _ = listener_setup(tmp_path)
    broker = Broker(cfg, Hooks(build_hooks(cfg)))
    Path(field.password_file).write_text(make_entry("device", b"rotated", ln=10).encode()
                                         + "\n")
    assert reload_hooks(broker, cfg)
    passwords = hook_of(list(broker.hooks.hooks), PasswordAuth)
    assert decide(passwords, client("device", field), b"rotated") == 0
    assert decide(passwords, client("device", field), b"secret") == 0x86


def test_an_unusable_listener_password_file_is_a_config_error_naming_key_and_file(
        tmp_path: Path) -> None:
    cfg, field, _, _ = listener_setup(tmp_path)
    Path(field.password_file).write_text("device:plain\n")
    with pytest.raises(ConfigError, match=r"listeners\[0\].password_file: .*field-passwords:1"):
        build_hooks(cfg)
