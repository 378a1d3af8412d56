"""`scriptorium browse OUTPUT`: search an output's transcripts in a web page and listen from the moment found.

app.py       the ASGI app (Starlette, served by uvicorn): the static page, the JSON API over the search
             index (pipeline/search.py), the recordings' audio with HTTP Range, the token
exports.py   CSV, NeMo and Lhotse exports of a hand-picked selection of segments
static/      the page: index.html, app.js (writes every string as text), app.css
"""

from __future__ import annotations

from pipeline.browse.app import byte_range, make_app, serve
from pipeline.browse.exports import FORMATS, export_selection, selected_segments

__all__ = ["FORMATS", "byte_range", "export_selection", "make_app", "selected_segments", "serve"]
