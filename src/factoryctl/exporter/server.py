"""The HTTP side: /metrics from a registry, optional TLS and basic auth, a clear bind error."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
import threading
from http.server import ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from factoryctl.errors import ExitStatus, FactoryctlError, UsageError
from factoryctl.exporter.webconfig import WebConfig

log = logging.getLogger("factoryctl.exporter")

# Not dcgm-exporter's 9400, so both can run side by side during a migration. 9835 is also
# nvidia_gpu_exporter's default: a node runs one or the other, never both (docs/exporter.md).
DEFAULT_PORT = 9835

_LANDING = (
    b"<html><head><title>factoryctl-exporter</title></head><body>"
    b'<h1>factoryctl-exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>'
)


def parse_listen(listen: str) -> tuple[str, int]:
    """``:9835``, ``0.0.0.0:9835``, ``127.0.0.1:0``, ``[::1]:9835`` -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {listen!r}: expected [HOST]:PORT, e.g. :9835")
    host = host.strip("[]")
    return host, int(port_text)


class _Handler(MetricsHandler):
    web: WebConfig = WebConfig()
    timeout = 10  # a client that stalls mid-request cannot hold a thread forever

    def setup(self) -> None:
        super().setup()  # applies `timeout` to the connection
        if isinstance(self.connection, ssl.SSLSocket):
            # Handshake here, in the connection's own thread, not in accept(): a client
            # that connects and says nothing must not stall every other scrape.
            self.connection.do_handshake()

    def do_GET(self) -> None:
        if not self.web.check(self.headers.get("Authorization")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="factoryctl-exporter"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            super().do_GET()
        elif path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(_LANDING)))
            self.end_headers()
            self.wfile.write(_LANDING)
        else:
            self.send_error(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake or a client hanging up is the client's problem, not a
        # traceback on our stderr.
        log.debug("request from %s failed", client_address, exc_info=True)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, listen: str, web: WebConfig | None = None):
        host, port = parse_listen(listen)
        handler: Any = type(
            "FactoryctlMetricsHandler",
            (_Handler,),
            {"registry": registry, "web": web or WebConfig()},
        )
        server_cls: Any = _Server
        if ":" in host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self.httpd: ThreadingHTTPServer = server_cls((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise FactoryctlError(
                    f"--listen {listen}: address already in use (another exporter running?)",
                    ExitStatus.ADDRESS_IN_USE,
                ) from None
            raise UsageError(f"--listen {listen}: {exc.strerror or exc}") from None
        if web is not None and web.ssl_context is not None:
            self.httpd.socket = web.ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if web is not None and web.ssl_context is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="factoryctl-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: how every serving loop learns to shut down.

    Call it once the server is bound and ready, so an early signal still gets Python's
    default handling (exit) rather than a stop request nobody waits for yet.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
