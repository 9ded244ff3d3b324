"""The small web page at ``/``: plain static files shipped inside the package.

No build step: ``server/web/`` holds the HTML, CSS and JavaScript exactly as served.
The page and its assets are public even when an API key is set, because the page is
what asks for the key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

__all__ = ["PUBLIC_PREFIXES", "WEB_DIR", "add_web_routes"]

PUBLIC_PREFIXES = ("/static/",)
"""Paths (besides ``/`` itself) served without the API key."""

WEB_DIR = Path(str(resources.files("chorus.server") / "web"))


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html",
                            headers={"Cache-Control": "no-cache"})


_ASSETS = frozenset(path.name for path in WEB_DIR.iterdir()
                    if path.is_file() and path.suffix in (".html", ".css", ".js"))
"""The files ``/static/`` serves, fixed at import: nothing else can be reached."""


async def _asset(request: web.Request) -> web.FileResponse:
    # Not aiohttp's add_static: its FileResponse answers a missing file with an empty
    # application/octet-stream 404 past every middleware, instead of the JSON error
    # every other endpoint gives; a fixed list also rules out any path trickery.
    name = request.match_info["filename"]
    if name not in _ASSETS:
        raise web.HTTPNotFound(text=f"no asset {name!r}")
    return web.FileResponse(WEB_DIR / name)


def add_web_routes(app: web.Application) -> None:
    """Serve the page at ``/`` and its assets under ``/static/``."""
    app.router.add_get("/", _index)
    app.router.add_get("/static/{filename}", _asset)
