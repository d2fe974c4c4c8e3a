"""A byte proxy in front of the daemon's control socket, to break connections on purpose: drop
every open connection (an SSE stream mid-event), or let one request through and throw its
answer away (a create whose answer is lost). It listens on a Unix socket or on loopback TCP
(the client's base_url mode) and records what clients sent."""
from __future__ import annotations

import os
import socket
import threading


class Proxy:
    def __init__(self, upstream: str, *, listen: str | None = None) -> None:
        """`listen`: a Unix socket path; None: a TCP port on 127.0.0.1 (see `base_url`)."""
        self.upstream = upstream
        if listen is None:
            self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._server.bind(("127.0.0.1", 0))
            self.socket = None
            self.base_url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        else:
            if os.path.exists(listen):
                os.unlink(listen)
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(listen)
            self.socket = listen
            self.base_url = None
        self._server.listen(64)
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._sent: list[bytearray] = []
        self._swallow: bytes | None = None
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # What tests use ---------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Breaks every open connection, both ways, at once; returns how many."""
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            for s in pair:
                _shut(s)
        return len(pairs)

    def swallow_next(self, request_line_prefix: bytes) -> None:
        """The next request starting with this (b"POST /v1/tasks ") reaches the daemon, and
        its answer is read and thrown away: the client sees the connection close first."""
        self._swallow = request_line_prefix

    def requests(self) -> list[bytes]:
        """Each connection's bytes from the client so far, in the order connections came."""
        with self._lock:
            return [bytes(b) for b in self._sent]

    def close(self) -> None:
        self._closed = True
        _shut(self._server)
        self._server.close()
        self.drop_all()
        if self.socket and os.path.exists(self.socket):
            os.unlink(self.socket)

    # Plumbing ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            sent = bytearray()
            state = {"swallowed": False}
            with self._lock:
                self._open.append((client, upstream))
                self._sent.append(sent)
            threading.Thread(target=self._to_upstream, args=(client, upstream, sent, state), daemon=True).start()
            threading.Thread(target=self._to_client, args=(client, upstream, state), daemon=True).start()

    def _to_upstream(self, client: socket.socket, upstream: socket.socket, sent: bytearray, state: dict) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                _shut(upstream)
                return
            with self._lock:
                sent += data
                if self._swallow is not None and data.startswith(self._swallow):
                    self._swallow = None
                    state["swallowed"] = True
            try:
                upstream.sendall(data)
            except OSError:
                _shut(client)
                return

    def _to_client(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            self._relay_answers(client, upstream, state)
        finally:
            with self._lock:
                if (client, upstream) in self._open:
                    self._open.remove((client, upstream))
            client.close()
            upstream.close()

    def _relay_answers(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                _shut(client)
                return
            if state["swallowed"]:
                # The daemon answered; the client never hears it.
                _shut(client)
                _shut(upstream)
                return
            try:
                client.sendall(data)
            except OSError:
                _shut(upstream)
                return


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
