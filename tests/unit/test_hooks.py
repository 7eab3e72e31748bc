"""The hook interface: the broker asks once which hooks provide which events."""

from hbroker.hooks import AuthResult, ClientInfo, Hook, Hooks

CLIENT = ClientInfo("c1", "alice", "127.0.0.1:5000", 5, "tcp://127.0.0.1:1883")


class DenySecrets(Hook):
    def check_acl(self, client: ClientInfo, topic: str, action: str) -> bool:
        return not topic.startswith("secret/")


class AllowAll(Hook):
    def check_acl(self, client: ClientInfo, topic: str, action: str) -> bool:
        return True


class Scram(Hook):
    def auth_methods(self) -> tuple[str, ...]:
        return ("SCRAM-SHA-256",)

    def enhanced_auth(self, client, method, data, state):
        return AuthResult(0x18, b"challenge", state="step1")


def test_events_not_overridden_are_not_provided():
    hooks = Hooks([DenySecrets()])
    assert hooks.provides("check_acl")
    assert not hooks.provides("authenticate")
    assert not hooks.provides("on_connected")
    assert hooks.authenticate == ()


def test_no_hooks_provide_nothing_and_allow_everything():
    hooks = Hooks()
    assert not any(hooks.provides(e) for e in ("check_acl", "authenticate", "on_start"))
    assert hooks.allowed(CLIENT, "secret/x", "publish")


def test_every_acl_hook_must_allow():
    hooks = Hooks([AllowAll(), DenySecrets()])
    assert len(hooks.check_acl) == 2
    assert hooks.allowed(CLIENT, "public/x", "publish")
    assert not hooks.allowed(CLIENT, "secret/x", "subscribe")


def test_enhanced_auth_methods_are_registered_by_name():
    scram = Scram()
    hooks = Hooks([scram, DenySecrets()])
    assert hooks.auth_method_hooks == {"SCRAM-SHA-256": scram}
    result = hooks.auth_method_hooks["SCRAM-SHA-256"].enhanced_auth(CLIENT, "SCRAM-SHA-256",
                                                                    None, None)
    assert (result.reason_code, result.data, result.state) == (0x18, b"challenge", "step1")


class AuditFailures(Hook):
    def __init__(self) -> None:
        self.failures: list[tuple[str, int, str]] = []

    def on_auth_failed(self, client: ClientInfo, reason_code: int, reason: str) -> None:
        self.failures.append((client.client_id, reason_code, reason))


def test_auth_failure_listeners_are_registered_like_any_event():
    audit = AuditFailures()
    hooks = Hooks([DenySecrets(), audit])
    assert len(hooks.on_auth_failed) == 1
    for hook in hooks.on_auth_failed:
        hook(CLIENT, 0x86, "bad password")
    assert audit.failures == [("c1", 0x86, "bad password")]
    assert not Hooks([DenySecrets()]).provides("on_auth_failed")


def test_an_authenticate_hook_may_answer_later():
    import asyncio

    class Later(Hook):
        async def _decide(self) -> int:
            return 0x87

        def authenticate(self, client: ClientInfo, password: bytes | None):
            return self._decide()

    hooks = Hooks([Later()])
    (authenticate,) = hooks.authenticate
    answer = authenticate(CLIENT, b"pw")
    assert not isinstance(answer, int)
    assert asyncio.run(answer) == 0x87


def test_enhanced_auth_result_carries_the_authenticated_username():
    assert AuthResult(0).username is None
    assert AuthResult(0, b"v=...", None, username="bob").username == "bob"

