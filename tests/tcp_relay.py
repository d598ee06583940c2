"""A TCP relay in front of a test server that notes when each connection arrives.

Tests put it between citygate and a private slapd to count directory attempts at the wire, not
by citygate's own word: a stopped slapd refuses connections (nothing would reach its log), and a
SIGSTOPped one logs nothing until it resumes. Each accepted connection is relayed to the server;
when the server refuses, the relay closes the client's connection, as a stopped server would.
Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._arrivals: list[float] = []  # time.monotonic() of each accepted connection
        self._sockets: list[socket.socket] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_forever, name="tcp-relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def arrivals(self, since: float = 0.0) -> list[float]:
        """When connections arrived (monotonic), those at or after `since`."""
        with self._lock:
            return [at for at in self._arrivals if at >= since]

    def close(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_forever(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._arrivals.append(time.monotonic())
                self._sockets.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:
            client.close()  # the server refuses: so does the relay
            return
        server.settimeout(None)
        with self._lock:
            self._sockets.append(server)
        threading.Thread(target=_pump, args=(server, client), daemon=True).start()
        _pump(client, server)


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until either side closes, then close both."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
