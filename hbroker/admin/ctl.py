"""`hbroker ctl`: the admin REST API from the command line (docs/admin-api.md).

    hbroker ctl --url http://127.0.0.1:9883 --token TOKEN clients
    HBROKER_TOKEN=... hbroker ctl kick sensor-17
    hbroker ctl retained ls 'plant/#'
    hbroker ctl publish plant/valve/3 open --qos 1 --retain

Tables by default, `--json` for the API's JSON (lists: every page's items in one array).
The exit status is 0 on success, 1 when the API answered with an error (its message is
printed) or could not be reached, 2 for a usage error. Only the standard library: it runs
wherever the broker's binary runs, against a local or a remote broker.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hbroker.text_table import cell, table

DEFAULT_URL = "http://127.0.0.1:9883"
TIMEOUT = 30.0


class CtlError(Exception):
    """What to print before exiting with status 1."""


class ApiClient:
    def __init__(self, url: str, token: str | None, cafile: str | None = None) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None

    def call(self, method: str, path: str, query: dict[str, Any] | None = None,
             body: Any = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items()
                                                 if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT,
                                        context=self.context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CtlError(f"{exc.code} {exc.reason}: {_message(exc.read())}") from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the admin API at {self.base}: {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise CtlError(f"admin API at {self.base}: {exc}") from None

    def items(self, path: str, query: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a paged list, page after page."""
        query = dict(query or {}, limit=1000)
        while True:
            page = self.call("GET", path, query)
            yield from page["items"]
            if page.get("next") is None:
                return
            query["after"] = page["next"]


def _message(raw: bytes) -> str:
    text = raw.decode(errors="replace").strip()
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text


def quote_topic(topic: str) -> str:
    """A topic as the path of /retained/{topic}: each level percent-encoded, `/` kept (a
    leading empty level encoded, so the path never holds `//`)."""
    quoted = urllib.parse.quote(topic, safe="/")
    if quoted.startswith("/"):
        quoted = "%2F" + quoted[1:]
    return quoted.replace("//", "/%2F")


# -- output -----------------------------------------------------------------------------------


def fields(data: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """A JSON object as `key: value` lines (nested objects indented)."""
    lines: list[str] = []
    width = max((len(k) for k in data if k not in skip), default=0)
    for key, value in data.items():
        if key in skip:
            continue
        if isinstance(value, dict) and value:
            lines.append(f"{key}:")
            lines += ["  " + line for line in fields(value).splitlines()]
        else:
            lines.append(f"{key + ':':<{width + 1}} {cell(value)}")
    return "\n".join(lines)


CLIENT_COLUMNS = (("client_id", "client id"), ("username", "username"),
                  ("listener", "listener"), ("protocol", "protocol"), ("peer", "peer"),
                  ("subscriptions", "subs"), ("inflight", "inflight"), ("queued", "queued"))
SESSION_COLUMNS = (("client_id", "client id"), ("connected", "connected"),
                   ("protocol", "protocol"), ("expiry_interval", "expiry"),
                   ("expires_in", "expires in"), ("subscriptions", "subs"),
                   ("inflight", "inflight"), ("queued", "queued"))
SUBSCRIPTION_COLUMNS = (("client_id", "client id"), ("topic_filter", "topic filter"),
                        ("qos", "qos"), ("no_local", "no local"),
                        ("retain_as_published", "rap"), ("retain_handling", "rh"),
                        ("subscription_identifier", "id"))
RETAINED_COLUMNS = (("topic", "topic"), ("qos", "qos"), ("size", "bytes"),
                    ("payload", "payload"))
LISTENER_COLUMNS = (("name", "name"), ("type", "type"), ("address", "address"),
                    ("tls", "tls"), ("serving", "serving"), ("clients", "clients"))


# -- commands ---------------------------------------------------------------------------------

Output = Callable[[Any], str]


def _run(api: ApiClient, args: argparse.Namespace) -> tuple[Any, Output]:
    """(what the API answered, how to print it as text) for the command in `args`."""
    cmd = args.ctl_command
    if cmd == "clients":
        rows = list(api.items("/clients", {"prefix": args.prefix, "listener": args.listener,
                                           "protocol": args.protocol,
                                           "username": args.username}))
        return rows, lambda r: table(r, CLIENT_COLUMNS)
    if cmd == "client":
        detail = api.call("GET", f"/clients/{_segment(args.client_id)}")
        return detail, _client_text
    if cmd == "kick":
        done = api.call("DELETE", f"/clients/{_segment(args.client_id)}")
        return done, lambda d: f"kicked {d['kicked']}"
    if cmd == "sessions":
        connected = {"online": "true", "offline": "false"}.get(args.state or "")
        rows = list(api.items("/sessions", {"prefix": args.prefix, "connected": connected}))
        return rows, lambda r: table(r, SESSION_COLUMNS)
    if cmd == "session":
        detail = api.call("GET", f"/sessions/{_segment(args.client_id)}")
        return detail, _session_text
    if cmd == "discard":
        done = api.call("DELETE", f"/sessions/{_segment(args.client_id)}")
        return done, lambda d: f"discarded the session of {d['discarded']}"
    if cmd == "subscriptions":
        rows = list(api.items("/subscriptions", {"client_id": args.client_id,
                                                 "shared_group": args.shared_group}))
        return rows, lambda r: table(r, SUBSCRIPTION_COLUMNS)
    if cmd == "retained":
        return _retained(api, args)
    if cmd == "publish":
        body: dict[str, Any] = {"topic": args.topic, "payload": args.message, "qos": args.qos,
                                "retain": args.retain}
        done = api.call("POST", "/publish", body=body)
        return done, lambda d: f"published (reason code 0x{d['reason_code']:02x}: " \
                               f"{d['reason']})"
    if cmd == "listeners":
        rows = api.call("GET", "/listeners")["items"]
        return rows, lambda r: table(r, LISTENER_COLUMNS)
    if cmd == "status":
        status = {"broker": api.call("GET", "/broker"), "storage": api.call("GET", "/storage")}
        return status, _status_text
    if cmd == "config":
        config = api.call("GET", "/config")
        return config, lambda c: json.dumps(c, indent=2)
    raise CtlError(f"unknown command {cmd!r}")


def _retained(api: ApiClient, args: argparse.Namespace) -> tuple[Any, Output]:
    cmd = args.retained_command
    if cmd == "ls":
        rows = list(api.items("/retained", {"filter": args.filter}))
        return rows, lambda r: table(r, RETAINED_COLUMNS)
    if cmd == "get":
        msg = api.call("GET", f"/retained/{quote_topic(args.topic)}")
        return msg, lambda m: fields(m)
    done = api.call("DELETE", f"/retained/{quote_topic(args.topic)}")
    return done, lambda d: f"cleared the retained message of {d['cleared']}"


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _client_text(detail: dict[str, Any]) -> str:
    session = detail.get("session") or {}
    text = fields(detail, skip=("session",))
    if session:
        text += "\nsession:\n" + "\n".join("  " + line for line in fields(
            session, skip=("subscription_list", "client_id")).splitlines())
        subs = session.get("subscription_list") or []
        if subs:
            text += "\n\n" + table(subs, SUBSCRIPTION_COLUMNS[1:])
    return text


def _session_text(detail: dict[str, Any]) -> str:
    text = fields(detail, skip=("subscription_list",))
    subs = detail.get("subscription_list") or []
    if subs:
        text += "\n\n" + table(subs, SUBSCRIPTION_COLUMNS[1:])
    return text


def _status_text(status: dict[str, Any]) -> str:
    broker = dict(status["broker"])
    counters = broker.pop("counters", {})
    dropped = broker.pop("dropped", {})
    lines = [fields(broker), "", "storage:",
             *("  " + line for line in fields(status["storage"]).splitlines()),
             "", "messages: received {publish_received}, sent {publish_sent}, routed "
             "{publish_routed}".format(**counters),
             "dropped:  " + ", ".join(f"{k} {v}" for k, v in dropped.items())]
    return "\n".join(lines)


# -- the parser -------------------------------------------------------------------------------

def add_parser(sub: Any) -> None:
    """`hbroker ctl ...` in the `hbroker` command's subparsers."""
    ctl = sub.add_parser("ctl", help="inspect and act on a running broker over its admin API",
                         description="The admin REST API from the command line "
                         "(docs/admin-api.md).")
    ctl.add_argument("--url", default=os.environ.get("HBROKER_URL", DEFAULT_URL),
                     help=f"the admin listener (default: $HBROKER_URL or {DEFAULT_URL})")
    ctl.add_argument("--token", help="bearer token (default: $HBROKER_TOKEN)")
    ctl.add_argument("--cafile", help="CA certificates to check an HTTPS listener's with")
    ctl.add_argument("--json", action="store_true", help="print the API's JSON")
    cmds = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    clients = cmds.add_parser("clients", help="connected clients")
    clients.add_argument("--prefix", help="client ids starting with this")
    clients.add_argument("--listener", help="of this listener")
    clients.add_argument("--protocol", choices=["3.1", "3.1.1", "5.0"])
    clients.add_argument("--username")
    cmds.add_parser("client", help="one client with its session").add_argument("client_id")
    cmds.add_parser("kick", help="disconnect a client (0x98 Administrative action)") \
        .add_argument("client_id")
    sessions = cmds.add_parser("sessions", help="sessions, online and offline")
    sessions.add_argument("--prefix", help="client ids starting with this")
    sessions.add_argument("--state", choices=["online", "offline"])
    cmds.add_parser("session", help="one session").add_argument("client_id")
    cmds.add_parser("discard", help="discard a session (no will)").add_argument("client_id")
    subs = cmds.add_parser("subscriptions", help="subscriptions of every session")
    subs.add_argument("--client-id")
    subs.add_argument("--shared-group")
    retained = cmds.add_parser("retained", help="retained messages: ls, get, rm")
    rcmds = retained.add_subparsers(dest="retained_command", required=True, metavar="ACTION")
    rcmds.add_parser("ls", help="retained messages matching a filter") \
        .add_argument("filter", nargs="?", default="#", help="topic filter (default: #)")
    rcmds.add_parser("get", help="one retained message").add_argument("topic")
    rcmds.add_parser("rm", help="clear a topic's retained message").add_argument("topic")
    publish = cmds.add_parser("publish", help="publish a message")
    publish.add_argument("topic")
    publish.add_argument("message")
    publish.add_argument("--qos", type=int, choices=[0, 1, 2], default=0)
    publish.add_argument("--retain", action="store_true")
    cmds.add_parser("listeners", help="the MQTT listeners")
    cmds.add_parser("status", help="broker and storage status")
    cmds.add_parser("config", help="the effective configuration (secrets redacted)")


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("HBROKER_TOKEN")
    api = ApiClient(args.url, token, args.cafile)
    try:
        data, text = _run(api, args)
    except CtlError as exc:
        print(f"hbroker ctl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else text(data))
    return 0
