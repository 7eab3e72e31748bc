"""The audit log: one JSON object per line in its own file (`[audit] file`).

Records: `auth_failure`, `acl_denied` (publish and subscribe), `session_taken_over`,
`reload`, the password-file changes of `hbroker passwd` and the admin API's mutating calls
(`admin_call`, written by `hbroker.admin.api`). Each line has `ts` (UTC, ISO 8601
with milliseconds) and `event`; the rest depends on the event. The file is opened for appending
and each record is flushed as it is written, so `tail -F` and log shippers see it at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, TextIO

log = logging.getLogger("hbroker.audit")


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class AuditLog:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fh: TextIO | None = None
        self._failed = False

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": _timestamp(time.time()), "event": event,
                           **{k: v for k, v in fields.items() if v is not None}},
                          default=str)
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                os.chmod(self.path, 0o600)
            self._fh.write(line + "\n")
            self._fh.flush()
            self._failed = False
        except OSError as exc:
            if not self._failed:  # one error line per outage, not one per record
                log.error("cannot write the audit log %s: %s", self.path, exc)
            self._failed = True
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
