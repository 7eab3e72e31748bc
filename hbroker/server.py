"""Starts the listeners, runs the broker under uvloop, handles SIGTERM/SIGINT/SIGHUP, and
tells systemd (Type=notify) when it is ready and when it stops."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hbroker import auth
from hbroker import log as hlog
from hbroker.broker import Broker
from hbroker.cluster.routing import ClusterError, ClusterRouting
from hbroker.config import Config, ConfigError, load_config
from hbroker.connection import Connection
from hbroker.hooks import Hook, Hooks
from hbroker.storage import StorageError, open_backend
from hbroker.storage.journal import Journal
from hbroker.storage.restore import restore
from hbroker.transports import Listener, ListenerError, describe

if TYPE_CHECKING:
    from hbroker.admin.server import AdminServer

log = logging.getLogger("hbroker.server")

SHUTDOWN_GRACE = 3.0  # seconds given to transports to flush their DISCONNECTs
# CPython's cyclic garbage collector, tuned for a broker: every message allocates a few tracked
# objects (the message, its deliveries, tuples) and many stay alive for a while (queues,
# inflight windows, a storage commit's changes). With the default thresholds (700, 10, 10) the
# collector ran often enough to be a measurable share of the per-message cost, most with
# durable storage (measured when these thresholds were chosen). Young collections now run
# every 50,000 allocations, and everything alive once the broker has started (configuration,
# restored state) is frozen out of the collections.
GC_THRESHOLDS = (50_000, 20, 100)


class Server:
    def __init__(self, config: Config, extra_hooks: Sequence[Hook] = ()) -> None:
        """`extra_hooks` (`hbroker serve --hook`) come after the hooks the configuration
        builds; a SIGHUP reload replaces only the latter."""
        self.config = config
        # Clustered ([cluster]): the live routing between instances is a hook of its own.
        self.cluster = ClusterRouting(config.cluster) if config.cluster is not None else None
        cluster_hooks = [self.cluster] if self.cluster is not None else []
        self.broker = Broker(config, Hooks([*auth.build_hooks(config), *extra_hooks,
                                            *cluster_hooks]))
        self.listeners: list[Listener] = []
        self.stopping: asyncio.Event | None = None
        self.started = False
        self.reload_pending = False
        self.admin: AdminServer | None = None  # [admin] enabled: hbroker.admin.server

    async def open_storage(self) -> None:
        """Open the storage backend and restore the state it holds, before any listener
        accepts a connection."""
        cfg = self.config.storage
        backend = open_backend(cfg)
        if backend is None:
            log.info("storage: memory (nothing survives a restart)")
            return
        await backend.open()
        state = await backend.load()
        broker = self.broker
        broker.journal = Journal(broker, backend, sync=cfg.mode == "sync",
                                 flush_interval=cfg.flush_interval_ms / 1000)
        counts = restore(broker, state)
        broker.journal.start()
        log.info("storage opened", extra={"backend": cfg.backend, "location": backend.describe(),
                                          "mode": cfg.mode, **counts})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        broker = self.broker
        broker.loop = loop
        source = self.config.source or "<default>"
        # TLS files are read before storage is opened: a wrong path fails fast.
        listeners = [Listener(lc, f"{source}: listeners[{i}]")
                     for i, lc in enumerate(self.config.listeners)]
        if self.config.admin.enabled:
            # First: health and metrics answer while storage is restored (/readyz: not yet).
            from hbroker.admin.server import AdminServer

            self.admin = AdminServer(self)
            if self.cluster is not None:
                self.admin.readiness.add("cluster", self.cluster.unready)
            await self.admin.start()
        await self.open_storage()
        if self.cluster is not None:
            try:
                await self.cluster.join(broker)
            except Exception as exc:
                raise ClusterError(f"{source}: cluster: cannot join over NATS "
                                   f"({', '.join(self.config.cluster.servers)}): "
                                   f"{exc or type(exc).__name__}") from exc

        def make_connection(listener: Listener) -> Connection:
            return Connection(broker, listener)

        for listener in listeners:
            await listener.start(loop, make_connection, broker.limits.max_packet_size,
                                 broker.limits.connect_timeout)
            self.listeners.append(listener)
            log.info("listening", extra=describe(listener))
        broker.start(loop)

    async def run(self, early_sighups: list[int] | None = None) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Signals are handled from the start: a
        SIGHUP that arrives while storage is restored (or before, into `early_sighups`, see
        `hbroker.cli`) reloads the configuration once the broker has started."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.started = False
        self.reload_pending = bool(early_sighups)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
        except (StorageError, ListenerError, ClusterError) as exc:
            log.error("cannot start: %s", exc)
            for listener in self.listeners:
                listener.close()
            if self.admin is not None:
                await self.admin.stop()
            return 1
        self.started = True
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("hbroker started", extra={"listeners": len(self.listeners)})
        notify_systemd("READY=1")
        if self.reload_pending:
            self.reload()
        await self.stopping.wait()
        notify_systemd("STOPPING=1")
        await self.stop()
        return 0

    def _on_sighup(self) -> None:
        if self.started:
            self.reload()
        else:
            log.info("SIGHUP while starting: the configuration is reloaded once started")
            self.reload_pending = True

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("stopping", extra={"signal": sig.name})
        assert self.stopping is not None
        self.stopping.set()

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.broker.stop()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.broker.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.cluster is not None:
            await self.cluster.leave()
        if self.broker.journal is not None:
            await self.broker.journal.close()
        if self.admin is not None:
            await self.admin.stop()
        log.info("hbroker stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the configuration file and apply what can change at run time."""
        old = self.config
        if old.source is None:
            log.info("SIGHUP: no configuration file to reload (embedded default in use)")
            return
        try:
            new = load_config(old.source)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        applied, needs_restart = old.reload_changes(new)
        effective = old.merge_reload(new)
        self.config = effective
        self.broker.apply_config(effective)
        auth.reload_hooks(self.broker, effective)  # password file, ACL, webhook, audit
        hlog.set_level(effective.logging.level)
        self.reload_certificates()
        log.info("SIGHUP: configuration reloaded", extra={
            "applied": ", ".join(applied) or "nothing changed"})
        if needs_restart:
            log.warning("SIGHUP: these changes need a restart and were not applied: %s",
                        ", ".join(needs_restart))


    def reload_certificates(self) -> None:
        """SIGHUP: every tls/wss listener reads its certificate, key, CA and CRL files again.
        Open connections keep their session; new handshakes use the new files. A listener
        whose files are unusable keeps the ones it has."""
        for listener in self.listeners:
            if listener.tls is None:
                continue
            try:
                listener.reload_tls()
            except ListenerError as exc:
                log.error("SIGHUP: certificates not reloaded: %s", exc)
                continue
            log.info("SIGHUP: certificates reloaded", extra={"listener": listener.name})


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd set it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", path, exc)


def serve(config: Config, early_sighups: list[int] | None = None,
          extra_hooks: Sequence[Hook] = ()) -> int:
    import uvloop

    return uvloop.run(Server(config, extra_hooks).run(early_sighups))
