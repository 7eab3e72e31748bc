"""`hbroker passwd add|delete|list FILE [USER]`: manage a password file (Mosquitto's
mosquitto_passwd habits: the file is created by the first `add`, `add` of an existing user
changes its password). The broker reads the file again on SIGHUP."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from hbroker.auth.passwords import (
    MAX_SCRYPT_LN,
    SCRAM_ITERATIONS,
    SCRYPT_LN,
    PasswordEntry,
    PasswordFileError,
    make_entry,
    read_password_file,
    write_password_file,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    passwd = sub.add_parser("passwd", help="manage a password file ([auth] password_file)")
    actions = passwd.add_subparsers(dest="passwd_command", required=True)
    add = actions.add_parser("add", help="add a user, or change its password")
    add.add_argument("file")
    add.add_argument("user")
    add.add_argument("--password", help="the password (for scripts; otherwise it is asked "
                     "for twice on the terminal)")
    add.add_argument("--scram", action="store_true",
                     help="also store SCRAM-SHA-256 keys, for [auth] scram = true")
    add.add_argument("--scram-iterations", type=int, default=SCRAM_ITERATIONS,
                     help=f"PBKDF2 iterations of the SCRAM keys (default {SCRAM_ITERATIONS}, "
                     "at least 4096)")
    add.add_argument("--cost", type=int, default=SCRYPT_LN,
                     help=f"scrypt cost as log2(N) (default {SCRYPT_LN}: 16 MiB per check)")
    delete = actions.add_parser("delete", help="remove a user")
    delete.add_argument("file")
    delete.add_argument("user")
    listing = actions.add_parser("list", help="print the users of a password file")
    listing.add_argument("file")
    for p in (add, delete, listing):
        p.add_argument("-c", "--config", help="broker configuration: changes are recorded in "
                       "its [audit] file, if it has one")


def _ask_password(user: str, prompt: Callable[[str], str]) -> str:
    first = prompt(f"Password for {user}: ")
    second = prompt("Again: ")
    if first != second:
        raise ValueError("the passwords do not match")
    return first


def _audit(config_path: str | None, event: str, **fields: object) -> None:
    if not config_path:
        return
    from hbroker.auth.audit import AuditLog
    from hbroker.config import load_config

    config = load_config(config_path)
    if config.audit.file:
        log = AuditLog(config.audit.file)
        log.record(event, **fields)
        log.close()


def run(args: argparse.Namespace, prompt: Callable[[str], str] = getpass.getpass) -> int:
    from hbroker.config import ConfigError

    path: str = args.file
    command = args.passwd_command
    try:
        if command == "list":
            for name, entry in read_password_file(path).items():
                print(f"{name}{' (scram-sha-256)' if entry.scram else ''}")
            return 0
        entries: dict[str, PasswordEntry] = {}
        if command == "delete" or os.path.exists(path):
            entries = read_password_file(path)
        user: str = args.user
        if command == "delete":
            if user not in entries:
                print(f"hbroker: {path}: no user {user!r}", file=sys.stderr)
                return 1
            del entries[user]
            write_password_file(path, entries)
            _audit(args.config, "passwd_delete", file=os.path.abspath(path), username=user)
            return 0
        if not 4096 <= args.scram_iterations <= 10_000_000:
            raise ValueError("--scram-iterations: expected 4096 to 10000000")
        if not 10 <= args.cost <= MAX_SCRYPT_LN:
            raise ValueError(f"--cost: expected 10 to {MAX_SCRYPT_LN}")
        password = args.password if args.password is not None else _ask_password(user, prompt)
        if not password:
            raise ValueError("the password cannot be empty")
        changed = user in entries
        entries[user] = make_entry(user, password.encode("utf-8"), scram=args.scram,
                                   ln=args.cost, scram_iterations=args.scram_iterations)
        write_password_file(path, entries)
        _audit(args.config, "passwd_change" if changed else "passwd_add",
               file=os.path.abspath(path), username=user, scram=args.scram)
        return 0
    except (PasswordFileError, ConfigError, ValueError, OSError) as exc:
        print(f"hbroker: {exc}", file=sys.stderr)
        return 1
