"""A TCP proxy that gives a loopback server a network's round-trip time (this kernel has no `netem`).

    with LatencyProxy(upstream_port, rtt_s=0.02) as proxy:   # 127.0.0.1, a free port, in a thread
        proxy.endpoint                                       # http://127.0.0.1:<port>
        proxy.requests                                       # Counter of HTTP request lines by method

Every chunk read from either side is written to the other `rtt_s / 2` after it was read, in order
(a link's propagation delay: reading goes on meanwhile, so the delay does not limit bandwidth): a
request and its response take at least one round-trip time more than without the proxy. Opening a
connection is not delayed (the client's connect completes locally); a real store's TCP and TLS
handshakes cost 1-3 round trips more per new connection, which clients amortise by keeping
connections alive.

`requests` counts the HTTP/1.x request lines (method, target, version) seen in the client-to-server
stream, by method ("LIST" for a GET that lists a bucket), without parsing messages: a body that held such a line would be counted too,
which the Parquet, JSON and audio bodies of a run do not. `connections` counts accepted connections.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter

_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|HEAD|DELETE|PATCH|OPTIONS) (?:/|https?://)\S* HTTP/1\.[01]\r\n")
_TAIL = 16384  # bytes of the stream kept to find a request line that straddles two chunks


class LatencyProxy:
    def __init__(self, upstream_port: int, rtt_s: float = 0.02, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = rtt_s / 2
        self.rtt_s = rtt_s
        self.requests: Counter = Counter()
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._live: set = set()  # the connections' tasks

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def cpu_seconds(self) -> float:
        """CPU seconds the proxy's thread has used (its cost beside what it measures)."""
        assert self._loop is not None

        async def now() -> float:
            return time.thread_time()

        return asyncio.run_coroutine_threadsafe(now(), self._loop).result(10)

    # -- life ---------------------------------------------------------------------------------------
    def __enter__(self) -> "LatencyProxy":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="latency-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("latency proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        loop = self._loop
        assert loop is not None and self._thread is not None

        async def stop() -> None:
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()

    # -- one connection -----------------------------------------------------------------------------
    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        self._live.add(me)  # asyncio keeps only weak references to tasks: a closed client's would be collected
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            self._live.discard(me)
            return
        try:
            await asyncio.gather(self._pipe(client_r, server_w, count=True), self._pipe(server_r, client_w))
        except asyncio.CancelledError:
            pass  # the proxy is stopping: close quietly
        finally:
            for w in (client_w, server_w):
                w.close()
            self._live.discard(me)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool = False) -> None:
        """Forward src to dst, each chunk `delay_s` after it was read; at EOF, close dst once the
        chunks before it are delivered."""
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if chunk is None:
                    break
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

        writer = asyncio.ensure_future(deliver())
        tail = b""
        try:
            while True:
                chunk = await src.read(65536)
                queue.put_nowait((time.monotonic() + self.delay_s, chunk or None))
                if not chunk:
                    break
                if count:
                    seen = tail + chunk
                    for m in _REQUEST_LINE.finditer(seen):
                        if m.end() > len(tail):  # not a line counted with the previous chunk
                            method = m.group(1).decode()
                            listing = method == "GET" and b"list-type=" in m.group(0)
                            self.requests["LIST" if listing else method] += 1
                    tail = seen[-_TAIL:]
        except (ConnectionError, OSError):
            queue.put_nowait((time.monotonic(), None))
        try:
            await writer
        except (ConnectionError, OSError):
            pass
