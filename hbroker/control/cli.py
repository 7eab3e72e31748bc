"""`hbroker keys ...` and `hbroker device ...`: HARCP keys and commands (docs/harcp.md §13)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hbroker.control.controller import (
    EXIT_BROKER,
    EXIT_USAGE,
    REQUEST_TYPES,
    BrokerError,
    Controller,
    execute_payload,
    parse_arg,
    parse_broker,
    query_payload,
)
from hbroker.control.harcp import SequenceStore, Signer
from hbroker.control.keys import Key, KeyFileError, read_key_file, write_key_files

COMMANDS = ("keys", "device")


def unsigned_sequence_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "hbroker" / "harcp-unsigned.seq"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="HARCP Ed25519 keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="write NAME.key (0600) and NAME.pub")
    generate.add_argument("name")
    generate.add_argument("--dir", default=".", help="directory (default: .)")
    show = keys_sub.add_parser("show", help="print a key file's key id and public key")
    show.add_argument("file")

    device = sub.add_parser("device", help="send HARCP commands to a device over MQTT")
    device_sub = device.add_subparsers(dest="device_command", required=True)
    exec_ = device_sub.add_parser(
        "exec", help="run an operation on a device; exit 0 on done (docs/harcp.md §13)")
    exec_.add_argument("device")
    exec_.add_argument("op")
    exec_.add_argument("--arg", action="append", default=[], metavar="K=V",
                       help="an argument; V is JSON if it parses, else a string (repeatable)")
    query = device_sub.add_parser("query", help="ask a device for its capabilities")
    query.add_argument("device")
    for p in (exec_, query):
        p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the answer (default 10)")
        p.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                       help="MQTT broker (default 127.0.0.1:1883)")
        p.add_argument("--key", metavar="FILE",
                       help="the controller's secret key file; without it the command is "
                       "sent unsigned (open-tier devices only)")
        p.add_argument("--device-key", action="append", default=[], metavar="FILE",
                       help="the device's public key file, to verify its answer (repeatable)")
        p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "keys":
            return _keys(args)
        return _device(args)
    except (KeyFileError, ValueError) as exc:  # key files, the sequence state file
        print(f"hbroker: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        secret, public = write_key_files(Key.generate(), args.name, Path(args.dir))
        key = read_key_file(secret)
        print(f"key id: {key.key_id.hex()}\nsecret: {secret}\npublic: {public}")
        return 0
    key = read_key_file(args.file)
    print(f"key id: {key.key_id.hex()}\npublic: {key.public.hex()}\n"
          f"secret: {'yes' if key.can_sign else 'no'}")
    return 0


def _device(args: argparse.Namespace) -> int:
    try:
        host, port = parse_broker(args.broker)
        arguments = dict(parse_arg(item) for item in getattr(args, "arg", []))
        if args.timeout <= 0:
            raise ValueError("--timeout must be positive")
    except ValueError as exc:
        print(f"hbroker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.key:
        signer = Signer.from_key_file(args.key)
    else:
        print("hbroker: no --key: sending the command unsigned", file=sys.stderr)
        signer = Signer(None, SequenceStore(unsigned_sequence_path()))
    device_keys = [read_key_file(path) for path in args.device_key]
    if args.device_command == "exec":
        payload = execute_payload(args.device, args.op, arguments, args.timeout)
    else:
        payload = query_payload(args.device)
    controller = Controller(host, port, signer, device_keys)
    try:
        outcome = controller.request(args.device, REQUEST_TYPES[args.device_command], payload,
                                     args.timeout)
    except BrokerError as exc:
        print(f"hbroker: {exc}", file=sys.stderr)
        return EXIT_BROKER
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        for note in outcome.refused:
            print(f"hbroker: answer refused: {note}", file=sys.stderr)
        if outcome.answer is not None and not outcome.answer.verified:
            print("hbroker: the answer is not verified (no --device-key)", file=sys.stderr)
        print(outcome.text() if outcome.answer is not None else
              f"timeout: no answer from {args.device} within {args.timeout:g} s")
    return outcome.exit_code
