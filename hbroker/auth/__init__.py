"""Authentication, authorisation (ACL) and the audit log, as hooks built from the configuration.

`build_hooks(config)` gives the hooks for `Broker(config, Hooks(...))`; `reload_hooks` rebuilds
them on SIGHUP (password file, ACL file, webhook and audit settings read again) and makes the
broker recompute which subscribers may read which topics. See docs/security.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hbroker.config import Config, ConfigError
from hbroker.hooks import Hook, Hooks

if TYPE_CHECKING:
    from hbroker.auth.hooks import PasswordFiles

__all__ = ["build_hooks", "reload_hooks"]

log = logging.getLogger("hbroker.auth")


def build_hooks(config: Config) -> list[Hook]:
    """The auth hooks `config` asks for, in the order they decide. A password or ACL file that
    cannot be used is a ConfigError naming the file (and the line or rule)."""
    # Imported here: `hbroker passwd` and `--version` import this package without needing
    # the compiled extensions the hooks use.
    from hbroker.auth.acl import AclError, load_acl
    from hbroker.auth.audit import AuditLog
    from hbroker.auth.hooks import AclHook, AuditHook, PasswordAuth, ScramAuth, WebhookAuth
    from hbroker.auth.webhook import WebhookAuthenticator

    hooks: list[Hook] = []
    audit = AuditLog(config.audit.file) if config.audit.file else None
    auth = config.auth
    files = _password_files(config)
    if files is not None:
        hooks.append(PasswordAuth(files))
        if auth.scram:
            hooks.append(ScramAuth(files))
    if auth.webhook_url:
        hooks.append(WebhookAuth(WebhookAuthenticator(auth.webhook_url, auth.webhook_timeout,
                                                      auth.webhook_cache_seconds)))
    if config.acl.file:
        try:
            acl = load_acl(config.acl.file)
        except AclError as exc:
            raise ConfigError(f"acl.file: {exc}") from None
        hooks.append(AclHook(acl, audit))
    if audit is not None:
        hooks.append(AuditHook(audit))
    return hooks


def _password_files(config: Config) -> PasswordFiles | None:
    """`auth.password_file` and the listeners' own password files, each loaded once; None
    when no password file is configured."""
    from hbroker.auth.hooks import PasswordFiles
    from hbroker.auth.passwords import PasswordFile, PasswordFileError

    def load(key: str, path: str) -> PasswordFile:
        try:
            return PasswordFile(path)
        except PasswordFileError as exc:
            raise ConfigError(f"{key}: {exc}") from None

    default = load("auth.password_file", config.auth.password_file) \
        if config.auth.password_file else None
    by_path: dict[str, PasswordFile] = {}
    for i, lc in enumerate(config.listeners):
        if lc.password_file and lc.password_file not in by_path:
            by_path[lc.password_file] = load(f"listeners[{i}].password_file", lc.password_file)
    if default is None and not by_path:
        return None
    return PasswordFiles(default, by_path)


def reload_hooks(broker: Any, config: Config) -> bool:
    """SIGHUP: replace the broker's auth hooks by ones built from `config`; other hooks stay.
    A file that cannot be used keeps the running hooks (logged). Returns whether it applied."""
    from hbroker.auth.hooks import AclHook, AuditHook, AuthHook, PasswordAuth

    try:
        new = build_hooks(config)
    except ConfigError as exc:
        log.error("SIGHUP: authentication and ACL not reloaded: %s", exc)
        return False
    old: Hooks = broker.hooks
    kept = [h for h in old.hooks if not isinstance(h, AuthHook)]
    denied = next((h.denied for h in old.hooks if isinstance(h, AclHook)), None)
    for h in new:
        if isinstance(h, AclHook) and denied is not None:
            h.denied = denied  # counters keep counting across reloads
    broker.hooks = Hooks([*new, *kept])
    for h in old.hooks:
        if isinstance(h, AuthHook):
            h.on_stop()
    for h in new:
        h.on_start(broker)
    bump = getattr(broker, "bump_acl_generation", None)
    if bump is not None:
        bump()
    for h in new:
        if isinstance(h, AuditHook):
            h.audit.record("reload", password_file=config.auth.password_file or None,
                           acl_file=config.acl.file or None,
                           users=next((len(x.passwords) for x in new
                                       if isinstance(x, PasswordAuth)
                                       and x.passwords is not None), None),
                           acl_rules=next((len(x.acl.rules) for x in new
                                           if isinstance(x, AclHook)), None))
    log.info("SIGHUP: authentication and ACL reloaded",
             extra={"hooks": ", ".join(h.name for h in new) or "none"})
    return True
