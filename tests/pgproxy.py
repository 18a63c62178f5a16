"""A TCP proxy in front of the test PostgreSQL server: the server "goes away" and comes back."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class Proxy:
    """A TCP proxy to the test server that the test stops (the server "goes away": every
    connection cut, new ones refused) and starts again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._stop.clear()
        self._sockets = [listener]
        self._thread = threading.Thread(target=self._run, args=(listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets = []

    def _run(self, listener: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    client, _ = listener.accept()
                    server = socket.create_connection(self.target)
                    self._sockets += [client, server]
                    pairs[client], pairs[server] = server, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(server, selectors.EVENT_READ)
                    continue
                if sock not in pairs:  # its pair closed both earlier in this round
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        pairs[sock].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    other = pairs.pop(sock)
                    pairs.pop(other, None)
                    for s in (sock, other):
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(s)
                        s.close()
        sel.close()
