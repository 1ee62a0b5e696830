"""A flaky S3 endpoint for tests: an HTTP proxy in front of the moto server that fails a share of
the requests it forwards, as a busy S3 does: half of the failures answer 503 SlowDown, the other
half close the connection without an answer. The failures are drawn from a seeded generator, so
a run meets the same pattern; ``share=1.0`` makes every request fail (a permanent outage)."""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FlakyS3:
    def __init__(self, upstream: str, share: float, seed: int = 0) -> None:
        target = urlsplit(upstream)
        self.host, self.port = target.hostname, target.port
        self.share = share
        self.forwarded = 0
        self.failed = {"503": 0, "dropped": 0}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if not size:
                            break
                        chunks.append(chunk)
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass                                  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fail = proxy._draw()
                if fail == "dropped":
                    self.close_connection = True
                    self.connection.shutdown(2)               # no answer at all
                    return
                if fail == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"              # its Content-Length is the object's size
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _draw(self) -> str:
        with self._lock:
            self.forwarded += 1
            if self._rng.random() >= self.share:
                return ""
            kind = "503" if self._rng.random() < 0.5 else "dropped"
            self.failed[kind] += 1
            return kind

    def __enter__(self) -> "FlakyS3":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
