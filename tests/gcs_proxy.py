"""A faulty HTTP/1.1 reverse proxy on 127.0.0.1 in front of the tests' GCS emulator
(tests/gcs_server.py): it forwards every request and, on a seeded share of them, answers 503 or
429 instead, or closes the connection without an answer. Standard library only.

* Forwarded: the method, path and query, the headers (hop-by-hop ones and ``Expect`` dropped:
  the proxy answers ``100 Continue`` itself, as curl/tensorstore asks for large uploads) and the
  body, read whole (``Content-Length`` or ``Transfer-Encoding: chunked``, which aiohttp uses for
  bodies of unknown length) and sent upstream with a ``Content-Length``. In a tiny run (~300
  requests) neither client sent a chunked body; tensorstore's curl sent ``Expect: 100-continue``
  on two of its uploads. The answer is streamed back in blocks (with its ``Content-Length``, else
  re-chunked); a ``Location`` naming the emulator (a resumable upload's session URL) is rewritten
  to the proxy, so the upload's later requests come through it too.
* Faults, decided before anything is forwarded (the emulator never sees a failed request, so a
  retry is always safe): ``"503"`` and ``"429"`` answer a GCS-style JSON error without a
  ``Retry-After``; ``"drop"`` reads the request and closes the connection without a byte. The
  optional ``"lost"`` forwards the request and then drops the answer (the request took effect, the
  client cannot know). Not used by the tests: fake-gcs-server answers the retried last request of
  a completed resumable upload (orbax's metadata files, through gcsfs) with 404, where GCS is
  documented to answer a completed session with 200/201 and the object; a run fails there.
* Deterministic: whether the n-th request with a given method and path+query fails, and how,
  is a hash of ``(seed, method, path, n)``, so it does not depend on how threads interleave;
  after ``max_consecutive`` faults in a row on one method and path the next one is forwarded
  (gcsfs gives up after 6 tries).
* ``forbid(prefix)``: requests whose path starts with ``prefix`` are answered 403 (the emulator
  implements no IAM); ``forbid_bucket(name)`` forbids the JSON API, upload and download paths of
  one bucket.
* ``stats``: requests, bytes in (request bodies) and out (answer bodies, counted as each block
  is handed to the socket, so a client that has read an answer sees it counted), faults by kind and by
  client (the User-Agent's first word: ``python-gcsfs``, tensorstore's), 403s, requests with a
  chunked body or ``Expect: 100-continue``, clients that hung up before the whole answer.

Bounded: it connects only to the loopback emulator it was given and stops (its listening socket
and every open connection closed) on ``stop()`` or at the end of a ``with`` block.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections import Counter

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"}
FAULT_KINDS = ("503", "429", "drop", "lost")
_BLOCK = 1 << 16


class FaultyProxy:
    """A running proxy in front of ``upstream`` (``http://127.0.0.1:PORT``).

    ``fault_rate``: the share of requests that fail (``client_rates``: another share for the
    requests of one client, by the first word of its User-Agent); ``faults``: the kinds drawn from (equally);
    ``latency_s``: added before each request is answered; ``env``: ``upstream_env`` with
    ``STORAGE_EMULATOR_HOST`` (gcsfs) and ``TENSORSTORE_GCS_HTTP_URL`` (orbax/tensorstore) pointing
    here."""

    def __init__(self, upstream: str, *, fault_rate: float = 0.0, faults=("503", "429", "drop"), seed: int = 0,
                 latency_s: float = 0.0, max_consecutive: int = 3, upstream_env: dict | None = None,
                 client_rates: dict | None = None):
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"upstream {upstream!r}: only a loopback http:// emulator is proxied")
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.upstream = upstream.rstrip("/")
        self._host, self._port = parsed.hostname, parsed.port
        self.fault_rate, self.faults, self.seed = float(fault_rate), tuple(faults), seed
        self.client_rates = dict(client_rates or {})
        self.latency_s, self.max_consecutive = latency_s, max_consecutive
        self.forbidden: list[str] = []
        self._lock = threading.Lock()
        self._seen: Counter = Counter()  # (method, path) -> requests so far
        self._streak: Counter = Counter()  # (method, path) -> faults in a row
        self.stats = {"requests": 0, "bytes_in": 0, "bytes_out": 0, "faults": Counter(), "forbidden": 0,
                      "client_hangups": 0, "chunked_requests": 0, "expect_100": 0,
                      "faults_by_client": Counter(), "requests_by_client": Counter()}
        self.hangups: list[str] = []
        self.log: list[tuple] = []  # (client, method, path) of every request but the forbidden
        self._conns: set = set()
        self.errors: list[str] = []  # the proxy's own exceptions other than a client hanging up
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.proxy = self
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.env = dict(upstream_env or {})
        self.env.update({"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url})
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="gcs-proxy", daemon=True)
        self._thread.start()

    def forbid(self, prefix: str) -> None:
        """Answers 403 to every request whose path starts with ``prefix``."""
        self.forbidden.append(prefix)

    def forbid_bucket(self, bucket: str) -> None:
        """Answers 403 to every request on ``bucket`` (JSON API, uploads, downloads)."""
        for base in ("/storage/v1/b/", "/upload/storage/v1/b/", "/download/storage/v1/b/"):
            self.forbid(f"{base}{bucket}/")
            self.forbid(f"{base}{bucket}?")

    def faults_injected(self) -> int:
        with self._lock:
            return sum(self.stats["faults"].values())

    def snapshot(self) -> dict:
        """A copy of ``stats`` (faults as a plain dict)."""
        with self._lock:
            return {**self.stats, "faults": dict(self.stats["faults"]),
                    "faults_by_client": dict(self.stats["faults_by_client"]),
                    "requests_by_client": dict(self.stats["requests_by_client"])}

    def _decide(self, method: str, path: str, client: str = "") -> str | None:
        """The fault for this request, or None to forward it (counts it). ``client``: the first
        word of its User-Agent (faults are counted by it)."""
        for prefix in self.forbidden:
            if path.startswith(prefix) or path + "?" == prefix:
                with self._lock:
                    self.stats["requests"] += 1
                    self.stats["forbidden"] += 1
                return "403"
        key = (method, path)
        with self._lock:
            self.stats["requests"] += 1
            self.stats["requests_by_client"][client] += 1
            n = self._seen[key]
            self._seen[key] += 1
            digest = hashlib.sha256(f"{self.seed}|{method} {path}|{n}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
            self.log.append((client, method, path))
            rate = self.client_rates.get(client, self.fault_rate)
            if self.faults and draw < rate and self._streak[key] < self.max_consecutive:
                kind = self.faults[digest[8] % len(self.faults)]
                self._streak[key] += 1
                self.stats["faults"][kind] += 1
                self.stats["faults_by_client"][client] += 1
                return kind
            self._streak[key] = 0
            return None

    def stop(self) -> None:
        """Stops serving and closes every open connection."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Server(http.server.ThreadingHTTPServer):
    proxy: FaultyProxy

    def handle_error(self, request, client_address):  # instead of a traceback on stderr
        import sys
        import traceback

        exc = sys.exc_info()[1]
        with self.proxy._lock:
            if isinstance(exc, ConnectionError):  # a client closed a kept-alive connection
                self.proxy.stats["client_hangups"] += 1
            else:
                self.proxy.errors.append(traceback.format_exc())


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this
    proxy: FaultyProxy

    def setup(self):
        super().setup()
        with self.proxy._lock:
            self.proxy._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.proxy._lock:
                self.proxy._conns.discard(self.connection)

    def log_message(self, *args):  # quiet
        pass

    def handle_expect_100(self):
        with self.proxy._lock:
            self.proxy.stats["expect_100"] += 1
        return super().handle_expect_100()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            with self.proxy._lock:
                self.proxy.stats["chunked_requests"] += 1
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _error(self, code: int, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message,
                                     "errors": [{"message": message, "reason": message}]}}).encode()
        with self.proxy._lock:  # counted before it is sent: see _forward
            self.proxy.stats["bytes_out"] += len(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self):
        proxy = self.proxy
        body = self._read_body()
        with proxy._lock:
            proxy.stats["bytes_in"] += len(body)
        path = urllib.parse.urlsplit(self.path).path
        client = (self.headers.get("User-Agent") or "-").split("/")[0].split()[0]
        fault = proxy._decide(self.command, self.path, client)
        if proxy.latency_s:
            time.sleep(proxy.latency_s)
        if fault == "403":
            return self._error(403, f"test-proxy@example.com does not have storage.objects access to {path} "
                               "(injected by tests/gcs_proxy.py)")
        if fault in ("503", "429"):
            return self._error(int(fault), "injected by tests/gcs_proxy.py")
        if fault == "drop":
            self.close_connection = True
            return
        upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=120)
        try:
            self._forward(upstream, body, fault)
        except ConnectionError:  # the client hung up before the whole answer was sent
            self.close_connection = True
            with proxy._lock:
                proxy.stats["client_hangups"] += 1
                proxy.hangups.append(f"{self.command} {self.path}")
        finally:
            upstream.close()

    def _forward(self, upstream, body: bytes, fault: str | None) -> None:
        proxy = self.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        upstream.request(self.command, self.path, body=body, headers=headers)
        resp = upstream.getresponse()
        if fault == "lost":
            resp.read()
            self.close_connection = True
            return
        self.send_response(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            if k.lower() == "location":
                v = v.replace(proxy.upstream, proxy.url)
            self.send_header(k, v)
        chunked = length is None and not no_body
        if length is not None:
            self.send_header("Content-Length", length)
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not no_body:
            block = resp.read(_BLOCK)
            if not block:
                break
            # Counted before the write: a client that has read the last byte may look at the
            # stats before this thread runs again (counting after the loop raced; CI saw it).
            with proxy._lock:
                proxy.stats["bytes_out"] += len(block)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _proxy
