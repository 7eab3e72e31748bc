"""`GET /api/v1/config`: the effective configuration (after defaults and SIGHUP reloads), as
JSON, with secrets redacted: options marked secret (`cluster.password`, `cluster.token`),
token hashes (`admin.tokens[].hash`), the password of any URL (`storage.dsn`,
`auth.webhook_url`) and any inline private key show `<redacted>`. File names (password files,
key files) are shown: they say where a secret is, not what it is.

Read with any token: a read-only token may see how the broker is set up, never a secret.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from hbroker.admin.api import Api, json_response
from hbroker.admin.server import READ
from hbroker.config import REDACTED

if TYPE_CHECKING:
    from aiohttp import web

    from hbroker.config import Config

# scheme://user:password@host...: the password part.
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*(?=@)")
_ALWAYS_REDACTED = frozenset({"hash"})


def redact_value(name: str, value: Any, secret: bool) -> Any:
    if isinstance(value, tuple):
        return [redact_value(name, v, secret) for v in value]
    if dataclasses.is_dataclass(value):
        return redacted_fields(value)
    if not isinstance(value, str) or not value:
        return value
    if secret or name in _ALWAYS_REDACTED or "PRIVATE KEY" in value:
        return REDACTED
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)


def redacted_fields(section: Any) -> dict[str, Any]:
    return {f.name: redact_value(f.name, getattr(section, f.name), f.metadata.get("secret",
                                                                                   False))
            for f in dataclasses.fields(section)}


def redacted_config(config: Config) -> dict[str, Any]:
    """The configuration as JSON-ready values, secrets redacted (see the module docstring)."""
    out: dict[str, Any] = {"source": config.source}
    for f in dataclasses.fields(config):
        if f.name == "source":
            continue
        value = getattr(config, f.name)
        if f.name == "listeners":
            out["listeners"] = [redacted_fields(lc) for lc in value]
        else:
            out[f.name] = None if value is None else redacted_fields(value)
    return out


def setup(api: Api) -> None:
    async def config(request: web.Request) -> web.Response:
        return json_response(redacted_config(api.server.config))

    api.route("GET", "/config", config, READ)
