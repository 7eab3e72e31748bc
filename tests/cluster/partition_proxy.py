"""A TCP proxy between one hbroker instance and its NATS server that can partition them.

`cut()` makes the link a black hole, as a network partition does: bytes from either side are
read and thrown away, nothing is closed (no FIN, no RST), and new connections are accepted and
never answered. `heal()` ends it: the black-holed connections are closed (as their peers'
stacks reset them once packets flow again) and new ones are forwarded.

The server's INFO lines are forwarded without `connect_urls`, so the client does not learn
the other NATS servers' addresses and go round the partition (nats-py adds every URL it is
told of to its pool).
"""

from __future__ import annotations

import re
import socket
import threading

_URLS = (re.compile(rb'"connect_urls":\[[^\]]*\],'), re.compile(rb',"connect_urls":\[[^\]]*\]'))


def _without_urls(data: bytes) -> bytes:
    for pattern in _URLS:
        data = pattern.sub(b"", data)
    return data


class PartitionProxy:
    """Listens on 127.0.0.1:`port` (free when 0) and forwards to `target` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.cut_off = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._held: set[socket.socket] = set()  # accepted or linked while cut
        self.connections = 0  # connections forwarded to the target
        self._closed = False
        threading.Thread(target=self._accepting, daemon=True).start()

    def cut(self) -> None:
        self.cut_off.set()
        with self._lock:
            self._held |= self._sockets

    def heal(self) -> None:
        with self._lock:
            held, self._held = self._held, set()
            self.cut_off.clear()
        for sock in held:
            self._close(sock)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            every = set(self._sockets) | self._held
        for sock in every:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _accepting(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.cut_off.is_set():  # nothing gets through: accepted, never answered
                    self._held.add(client)
                    threading.Thread(target=self._swallow, args=(client,),
                                     daemon=True).start()
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets |= {client, server}
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True),
                             daemon=True).start()

    def _swallow(self, sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.cut_off.is_set():
                    continue  # lost in the partition
                sink.sendall(_without_urls(data) if from_server else data)
        except OSError:
            pass
        if self.cut_off.is_set():
            return  # no FIN across a partition: heal() closes what is left
        self._close(source)
        self._close(sink)
