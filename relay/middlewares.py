"""HTTP middleware: domain errors become JSON answers; nothing identifying is logged."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import RelayError

__all__ = ["error_middleware"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map relay errors to JSON; never let a traceback reach a client."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except RelayError as exc:
        return web.json_response({"error": exc.code, "message": exc.message}, status=503)
    except Exception:
        log.exception("unexpected error on %s", request.path)
        return web.json_response({"error": "internal", "message": "The relay failed."}, status=500)
