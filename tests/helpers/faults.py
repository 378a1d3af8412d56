"""Test helpers for issue 4: an S3 server (moto) behind a fault-injecting HTTP proxy, and process
utilities for the crash tests (find / kill only the processes a test started, by pid).

    with S3Faults(fail_rate=0.1) as s3:         # moto on 127.0.0.1, proxy in front of it
        s3.endpoint                             # http://127.0.0.1:<proxy port> (faulty)
        s3.direct                               # http://127.0.0.1:<moto port>  (clean)
        s3.faults                               # Counter of injected faults by kind

Faults, drawn per request with probability `fail_rate` (seeded, so runs are repeatable):
  "503"  answer 503 SlowDown without forwarding (throttling);
  "500"  answer 500 InternalError without forwarding;
  "drop" forward the request (it takes effect on the server), then close the connection without
         answering: the client cannot tell whether a PUT/DELETE happened and must retry it safely.

A brownout (`s3.start_stall()` ... `s3.stop_stall()`): the proxy still accepts connections and
reads requests but answers nothing and forwards nothing; when the stall ends it closes the connections
it held without a word (what a client sees of a server that hung and was restarted), then serves again.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_ProxyServer"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        body = self._body()
        if self.server.stalled.is_set():  # brownout: hold the request, say nothing, then hang up
            self.server.stalled_requests += 1
            while self.server.stalled.is_set():
                time.sleep(0.05)
            self._hang_up()
            return
        kind = self.server.draw()
        if kind in ("503", "500"):
            code, err = (503, "SlowDown") if kind == "503" else (500, "InternalError")
            msg = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{err}</Code><Message>injected</Message></Error>'
            data = msg.encode() if self.command != "HEAD" else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg.encode())))
            self.end_headers()
            self.wfile.write(data)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "content-length"}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if kind == "drop":  # the server acted on it; the client never hears back
            self._hang_up()
            return
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        # HEAD: the upstream Content-Length is the object's size (there is no body to count)
        length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _hang_up(self) -> None:
        """Close the connection without a word of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream_port: int, fail_rate: float, kinds: tuple[str, ...], seed: int):
        super().__init__(("127.0.0.1", port), _Proxy)
        self.upstream_port, self.fail_rate, self.kinds = upstream_port, fail_rate, kinds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter = Counter()
        self.requests = 0
        self.stalled = threading.Event()
        self.stalled_requests = 0

    def draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.fail_rate and self.rng.random() < self.fail_rate:
                kind = self.rng.choice(self.kinds)
                self.faults[kind] += 1
                return kind
        return None


class S3Faults:
    def __init__(self, fail_rate: float = 0.1, kinds: tuple[str, ...] = ("503", "500", "drop"), seed: int = 4):
        self.fail_rate, self.kinds, self.seed = fail_rate, kinds, seed

    def __enter__(self) -> "S3Faults":
        from moto.server import ThreadedMotoServer

        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            os.environ.setdefault(k, v)
        self.moto_port, self.proxy_port = free_port(), free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self.moto.start()
        self.proxy = _ProxyServer(self.proxy_port, self.moto_port, 0.0, self.kinds, self.seed)
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        return self

    def start_faults(self, fail_rate: float | None = None) -> None:
        self.proxy.fail_rate = self.fail_rate if fail_rate is None else fail_rate

    def stop_faults(self) -> None:
        self.proxy.fail_rate = 0.0

    def start_stall(self) -> None:
        """Brownout on: accept and read, answer nothing (see the module docstring)."""
        self.proxy.stalled.set()

    def stop_stall(self) -> None:
        self.proxy.stalled.clear()

    @property
    def faults(self) -> Counter:
        return self.proxy.faults

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def __exit__(self, *exc) -> None:
        self.proxy.stalled.clear()  # let held handler threads end
        self.proxy.shutdown()
        self.proxy.server_close()
        self.moto.stop()


# -- processes ----------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (from /proc; no psutil here)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def find_descendant(pid: int, needle: str) -> list[int]:
    return [p for p in descendants(pid) if needle in cmdline(p)]


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`'s process group (the test started it with start_new_session) and any descendant
    that left it. Only processes this test started."""
    pids = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
