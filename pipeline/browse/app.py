"""The web app of `scriptorium browse`: a static page and a small JSON API over the search index, and the
recordings' audio streamed from their input URIs.

Safe by construction:
- audio is served by recording id only: the id must be a committed row of the output's `recordings`
  table (as the index mirrors it), and the server opens that row's `uri`, never a path from the request;
- no transcript string is ever put into HTML by the server: the page is a static file, the API answers
  JSON, and the page's script writes every string as a text node (`textContent`), matched words included;
- bound to a loopback address, only requests addressed to it are answered (a DNS-rebinding page cannot
  reach it); bound anywhere else, every request needs the token printed at start-up (then kept in an
  HttpOnly cookie).
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import fsspec
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.browse.exports import export_selection
from pipeline.config import OutputConfig
from pipeline.errors import UserError, with_retries
from pipeline.search import Query, connect, facets, index_path, recording, search
from pipeline.storage import filesystem

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost")
COOKIE = "scriptorium_token"
#: A recording id as `pipeline.records.recording_id_for` makes it.
RECORDING_ID = re.compile(r"[0-9a-f]{16}")
CHUNK = 256 * 1024
#: What the browser is told an input is (Python's table lacks some audio types).
AUDIO_TYPES = {
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
}


def media_type(uri: str) -> str:
    suffix = Path(uri.split("?", 1)[0]).suffix.lower()
    return AUDIO_TYPES.get(suffix) or mimetypes.guess_type("x" + suffix)[0] or "application/octet-stream"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`Range: bytes=a-b` -> (first, last) inclusive, clamped to the object; None: the whole object.
    Raises ValueError for a range that cannot be served (416)."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise ValueError(header)
    if m.group(1) == "":  # the last N bytes
        n = int(m.group(2))
        return max(0, size - n), size - 1
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if first >= size or first > last:
        raise ValueError(header)
    return first, last


class TokenMiddleware(BaseHTTPMiddleware):
    """Every request carries the token (`?token=`, the cookie it sets, or `Authorization: Bearer`)."""

    def __init__(self, app, token: str):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        auth = request.headers.get("authorization", "")
        given = (
            request.query_params.get("token")
            or request.cookies.get(COOKIE)
            or (auth[7:] if auth.lower().startswith("bearer ") else "")
        )
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("a token is needed: open the URL `scriptorium browse` printed\n", status_code=403)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response


def make_app(cfg: OutputConfig, host: str = "127.0.0.1", token: str | None = None, index: Path | None = None):
    """The ASGI app for the output `cfg` (its index at `index`, default `search.index_path`). `token`:
    required of every request when given (`serve` gives one whenever `host` is not a loopback address)."""
    path = index or index_path(cfg)

    def db():
        return connect(path)

    @lru_cache(maxsize=4096)
    def object_size(uri: str) -> int:
        """The input's size, asked of its store once (a seeking audio element sends many requests)."""
        fs, fpath = filesystem(uri, cfg.storage)
        return int(with_retries(lambda: fs.size(fpath)))

    def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_NO_SNIFF)

    def api_search(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if v != "" and k != "token"}
        if "q" in params:
            params["text"] = params.pop("q")
        try:
            q = Query(**params)
        except ValidationError as exc:
            return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        with db() as con:
            hits = search(con, q)
        return JSONResponse({"hits": [h.model_dump() for h in hits]}, headers=_NO_SNIFF)

    def api_facets(request: Request) -> Response:
        with db() as con:
            return JSONResponse(facets(con), headers=_NO_SNIFF)

    def recording_of(request: Request) -> dict | None:
        """The recording the path names, or None (no such id, or not an id at all)."""
        rid = request.path_params["rid"]
        with db() as con:
            return recording(con, rid) if RECORDING_ID.fullmatch(rid) else None

    def api_recording(request: Request) -> Response:
        rec = recording_of(request)
        if rec is None:
            return _error(404, "no such recording in this output")
        return JSONResponse(rec, headers=_NO_SNIFF)

    def audio(request: Request) -> Response:
        rec = recording_of(request)
        if rec is None:
            return _error(404, "no such recording in this output")
        uri = rec["uri"]
        fs, fpath = filesystem(uri, cfg.storage)
        try:
            size = object_size(uri)
        except FileNotFoundError:
            return _error(404, "the recording's input is gone from its store")
        try:
            rng = byte_range(request.headers.get("range"), size)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        first, last = rng if rng is not None else (0, size - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(last - first + 1), **_NO_SNIFF}
        if rng is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"

        def body() -> Iterator[bytes]:
            # s3fs takes the size instead of asking the store again (a HEAD per request)
            known = {"size": size} if fsspec.utils.get_protocol(uri) in ("s3", "s3a") else {}
            with fs.open(fpath, "rb", block_size=CHUNK, **known) as f:
                f.seek(first)
                left = last - first + 1
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

        return StreamingResponse(
            body(), status_code=206 if rng is not None else 200, headers=headers, media_type=media_type(uri)
        )

    async def api_export(request: Request) -> Response:
        try:
            req = json.loads(await request.body())
            fmt = str(req.get("format", ""))
            pairs = [(str(r), int(i)) for r, i in req.get("segments", [])]
        except (ValueError, TypeError, AttributeError):
            return _error(
                400, 'expected {"format": "csv|nemo|lhotse", "segments": [[recording_id, segment_index], ...]}'
            )
        if not pairs:
            return _error(400, "no segment selected")
        try:
            body, mtype, name = await run_in_threadpool(export_selection, cfg, fmt, pairs)
        except UserError as exc:
            return _error(400, str(exc))
        return Response(body, media_type=mtype, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    routes = [
        Route("/", page),
        Route("/api/search", api_search),
        Route("/api/facets", api_facets),
        Route("/api/recording/{rid}", api_recording),
        Route("/api/export", api_export, methods=["POST"]),
        Route("/audio/{rid}", audio),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if host in LOOPBACK:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]))
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))
    return Starlette(routes=routes, middleware=middleware)


_NO_SNIFF = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'self'; media-src 'self'"}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_NO_SNIFF)


def serve(cfg: OutputConfig, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> None:
    """Run the app until interrupted. Off a loopback address a token is always required (a fresh one
    unless given)."""
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(24)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")
    print(f"scriptorium browse: {url}", flush=True)
    uvicorn.run(make_app(cfg, host, token), host=host, port=port, log_level="warning")
