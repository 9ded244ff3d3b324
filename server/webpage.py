"""The small web page at ``/``: plain static files shipped inside the package.

No build step: ``server/web/`` holds the HTML, CSS and JavaScript exactly as served.
The page and its assets are public even when an API key is set, because the page is
what asks for the key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

__all__ = ["PUBLIC_PREFIXES", "add_web_routes"]

PUBLIC_PREFIXES = ("/static/",)
"""Paths (besides ``/`` itself) served without the API key."""

_WEB_DIR = Path(str(resources.files("chorus.server") / "web"))


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_WEB_DIR / "index.html",
                            headers={"Cache-Control": "no-cache"})


def add_web_routes(app: web.Application) -> None:
    """Serve the page at ``/`` and its assets under ``/static/``."""
    app.router.add_get("/", _index)
    app.router.add_static("/static/", _WEB_DIR, show_index=False, follow_symlinks=False)
