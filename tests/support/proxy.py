"""A TCP proxy on loopback that can stop forwarding: a network outage, on demand.

The service and the test clients reach the broker only through it (the broker
advertises the proxy's port), so `cut()` cuts them all off at once without
stopping the broker: open connections are dropped and new ones are accepted
and then hang, as they do behind a dead link. `restore()` forwards again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def cut(self) -> None:
        """Stop forwarding: every open connection is dropped; new ones hang."""
        self._forwarding.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._forwarding.set()

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()  # release connections waiting for the link
        self._listener.close()
        self.cut()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._forwarding.wait()  # behind a cut link a new connection just hangs
        if self._closed.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets |= {client, upstream}
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while self._forwarding.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, sink}


class ProxiedBroker:
    """A broker reachable only through a `TcpProxy` (it advertises the proxy's port).

    `proxy.cut()` is a network outage; `broker.stop()` then `broker.start(broker_port)`
    a restart on the same address.
    """

    def __init__(self) -> None:
        from consumer.embedded import free_port
        from tests.support.broker import TansuBroker

        self.broker_port = free_port()
        self.proxy = TcpProxy(self.broker_port).start()
        self.broker = TansuBroker(advertised_port=self.proxy.port).start(self.broker_port)

    @property
    def bootstrap(self) -> str:
        """Where clients that must go through the proxy connect."""
        return f"127.0.0.1:{self.proxy.port}"

    def close(self) -> None:
        self.broker.stop()
        self.proxy.close()
