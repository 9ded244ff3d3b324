"""The JSON error body of the HTTP API, one shape on every route.

``{"error": {"code", "message", "type", "param"}}``: ``code`` and ``message`` are
Chorus's own (a stable machine-readable code, a sentence naming what to fix); ``type``
and ``param`` complete OpenAI's shape, so that OpenAI's SDKs and the clients built on
them (Open WebUI reads ``error.message``) raise their usual error classes with our
message. One shape for both kinds of route, rather than two, keeps every existing
client working: a reader of ``code`` and ``message`` finds them where they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = ["error_body", "error_response", "error_type"]

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          429: "rate_limit_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def error_body(status: int, code: str, message: str,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": error_type(status),
                      "param": param}}


def error_response(status: int, code: str, message: str, param: str | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, code, message, param), status=status,
                             headers=headers)
