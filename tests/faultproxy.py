"""A TCP proxy on 127.0.0.1 that drops connections mid-response, for the remote-read tests.

``CuttingProxy(upstream_port, cuts=N, after=B)`` forwards every connection to the upstream server; the first
``N`` times a connection's response bytes would pass ``B``, it forwards exactly ``B`` bytes and then closes
both sides: the client sees a response whose body ends before its Content-Length (a dropped connection, a
truncated transfer). Later connections pass untouched. Sockets time out after :data:`TIMEOUT_S`, and every
thread is a daemon, so a test using it can never hang.
"""
from __future__ import annotations

import socket
import threading

TIMEOUT_S = 30.0


class CuttingProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream>``, cutting the first ``cuts`` long responses.

    Attributes:
        port: the proxy's port; ``url`` its ``http://`` address.
        cut: how many connections were cut so far.
    """

    def __init__(self, upstream: int, cuts: int, after: int) -> None:
        self.upstream, self.left, self.after, self.cut = upstream, cuts, after, 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=TIMEOUT_S)
            client.settimeout(TIMEOUT_S)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            self.cut += 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        """Copy ``source`` to ``sink`` until either closes; a response stream may be cut after ``after`` bytes."""
        sent = 0
        try:
            while data := source.recv(65536):
                if response and sent + len(data) > self.after and self._take_cut():
                    sink.sendall(data[:max(0, self.after - sent)])
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        """Stop accepting (open connections end with their sockets' timeouts or peers)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
