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
