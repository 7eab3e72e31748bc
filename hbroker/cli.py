"""The `hbroker` command: serve, check-config, storage inspect, token, ctl, cluster status,
--version."""

from __future__ import annotations

import argparse
import importlib
import platform
import signal
import sys
from typing import Any

import hbroker

EXTENSIONS = ("hbroker_ext.codec", "hbroker_ext.topics", "hbroker_ext.routing",
              "hbroker_ext.sqlite_writer", "hbroker_ext.harcp")


def compiled_extensions() -> list[str]:
    """The compiled Cython modules; hbroker does not run without them (no Python fallback)."""
    found = []
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise SystemExit(
                f"hbroker: the compiled extension {name} is missing ({exc}); "
                "build it with `make build`") from None
        path = getattr(module, "__file__", "") or ""
        if not path.endswith((".so", ".pyd")):
            raise SystemExit(f"hbroker: {name} is not a compiled extension ({path})")
        found.append(name)
    return found


def version_text() -> str:
    import uvloop

    return "\n".join([
        f"hbroker {hbroker.__version__}",
        f"python {platform.python_version()} ({platform.python_implementation()})",
        f"event loop: uvloop {uvloop.__version__}",
        "compiled extensions: " + ", ".join(compiled_extensions()),
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hbroker", description="MQTT 3.1.1/5.0 broker")
    parser.add_argument("--version", action="store_true",
                        help="print version, event loop and compiled extensions")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("-c", "--config", help="TOML configuration file (default: embedded, "
                       "127.0.0.1:1883)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="override logging.level")
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="override logging.format")
    serve.add_argument("--hook", action="append", default=[], metavar="MODULE:NAME",
                       help="load an extension hook (hbroker.hooks.Hook subclass), from a "
                       "module or a file (path/to/file.py:Name); repeatable, called in "
                       "order after the auth hooks (docs/extensions.md)")
    check = sub.add_parser("check-config",
                           help="validate a configuration file and print the effective one")
    check.add_argument("-c", "--config", required=True, help="TOML configuration file")
    storage = sub.add_parser("storage", help="look at the stored broker state")
    storage_sub = storage.add_subparsers(dest="storage_command", required=True)
    inspect = storage_sub.add_parser(
        "inspect", help="sessions (subscriptions, queued and inflight messages), retained "
        "and stored message counts")
    inspect.add_argument("-c", "--config", help="TOML configuration file (default: embedded)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    token = sub.add_parser("token", help="make a bearer token for the admin listener: "
                           "prints the token and its [[admin.tokens]] entry (hash only)")
    token.add_argument("--name", required=True, help="who or what will hold the token")
    token.add_argument("--role", choices=["read", "admin"], default="read",
                       help="read (metrics and read calls) or admin (default: read)")
    from hbroker.auth.passwd import add_parser as add_passwd_parser

    add_passwd_parser(sub)
    from hbroker.control.cli import add_parsers as add_control_parsers

    add_control_parsers(sub)  # keys, device (HARCP, docs/harcp.md)
    from hbroker.admin.ctl import add_parser as add_ctl_parser

    add_ctl_parser(sub)  # ctl: the admin API from the command line (docs/admin-api.md)
    from hbroker.cluster.status import add_parser as add_cluster_parser

    add_cluster_parser(sub)  # cluster status: the cluster as NATS holds it (clustering.md)
    return parser


def _storage_inspect(config: Any, as_json: bool) -> int:
    import asyncio
    import json
    import time

    from hbroker.storage import StorageError, open_backend

    backend = open_backend(config.storage)
    if backend is None:
        print("hbroker: storage.backend is \"memory\": nothing is stored", file=sys.stderr)
        return 2

    async def run() -> dict[str, Any]:
        await backend.open()
        try:
            return await backend.inspect()
        finally:
            await backend.close()

    try:
        info = asyncio.run(run())
    except StorageError as exc:
        print(f"hbroker: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    sessions = info["sessions"]
    print(f"backend:   {info['backend']} ({info['location']}), schema {info['schema_version']}")
    print(f"retained:  {info['retained']}")
    print(f"messages:  {info['messages']} stored for delivery")
    print(f"sessions:  {len(sessions)}")
    if sessions:
        print(f"  {'client id':<32} {'ver':>3} {'subs':>5} {'queued':>7} {'inflight':>8} "
              f"{'qos2-in':>7}  expiry")
        now = time.time()
        for x in sessions:
            if x["expiry_interval"] is None:
                expiry = "never"
            elif x["expires_at"] is None:
                expiry = f"{x['expiry_interval']:g} s after disconnect (connected at stop)"
            else:
                expiry = f"in {max(0, x['expires_at'] - now):.0f} s"
            print(f"  {x['client_id']:<32} {x['protocol_version']:>3} {x['subscriptions']:>5} "
                  f"{x['queued']:>7} {x['inflight']:>8} {x['incoming_qos2']:>7}  {expiry}"
                  f"{'  (will)' if x['will'] else ''}")
    return 0


def _token(name: str, role: str) -> int:
    """`hbroker token`: the token on the first line (for scripts), then the entry to add to
    the configuration file, which holds only its hash."""
    from hbroker.admin.tokens import hash_token, new_token
    from hbroker.config import AdminToken, _toml_value

    token = new_token()
    entry = AdminToken(name=name, hash=hash_token(token), role=role)
    print(token)
    print()
    print("# Add to the configuration file (the token itself is not stored; keep it safe):")
    print("[[admin.tokens]]")
    for key in ("name", "hash", "role"):
        print(f"{key} = {_toml_value(getattr(entry, key))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    from hbroker.config import ConfigError, load_config

    if args.command == "token":
        return _token(args.name, args.role)
    if args.command == "passwd":
        from hbroker.auth.passwd import run as passwd_run

        return passwd_run(args)
    if args.command == "ctl":
        from hbroker.admin.ctl import run as ctl_run

        return ctl_run(args)
    if args.command == "cluster":
        from hbroker.cluster.status import run as cluster_run

        return cluster_run(args)
    if args.command in ("keys", "device"):
        from hbroker.control.cli import run as control_run

        return control_run(args)
    if args.command in ("check-config", "storage"):
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"hbroker: {exc}", file=sys.stderr)
            return 2
        if args.command == "storage":
            return _storage_inspect(config, args.json)
        from hbroker.auth import build_hooks

        try:
            build_hooks(config)  # the password and ACL files must load too
        except ConfigError as exc:
            print(f"hbroker: {config.source}: {exc}", file=sys.stderr)
            return 2
        print(config.to_toml(redact=True), end="")
        return 0
    if args.command in (None, "serve"):
        # Until the event loop handles SIGHUP (hbroker.server), one is remembered instead of
        # ending the process: `systemctl reload` right after a start must not stop the broker.
        early_sighups: list[int] = []
        signal.signal(signal.SIGHUP, lambda signum, frame: early_sighups.append(signum))
        compiled_extensions()
        path = getattr(args, "config", None)
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(f"hbroker: {exc}", file=sys.stderr)
            return 2
        from hbroker import log as hlog

        level = getattr(args, "log_level", None) or config.logging.level
        fmt = getattr(args, "log_format", None) or config.logging.format
        hlog.setup_logging(level, fmt)
        from hbroker.hooks import load_hook
        from hbroker.server import serve

        try:
            extra = [load_hook(spec) for spec in getattr(args, "hook", None) or ()]
        except ValueError as exc:
            print(f"hbroker: {exc}", file=sys.stderr)
            return 2
        try:
            return serve(config, early_sighups, extra)
        except ConfigError as exc:  # a password or ACL file that cannot be used
            print(f"hbroker: {config.source or '<default>'}: {exc}", file=sys.stderr)
            return 2
    return 2
