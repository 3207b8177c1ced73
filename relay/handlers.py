"""HTTP endpoints and the WebSocket endpoint of the relay."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import Any

from aiohttp import WSMsgType, web

from . import PROTOCOL_VERSION
from .appkeys import CONFIG, CONNECTIONS, METRICS, OPERATIONS, SERVER_NAME, STORE
from .config import ADMISSION_PARAM, Admission, RelayConfig
from .connection import Connection, TokenBucket
from .errors import InternalError, ProtocolViolation, RelayError, StoreUnavailable
from .operations import Operations
from .protocol import NONCE_BYTES, decode_request, request_id_of

__all__ = ["healthz", "info", "metrics", "websocket"]

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """200 while the store answers, 503 otherwise."""
    try:
        await asyncio.wait_for(request.app[STORE].ping(), _HEALTH_TIMEOUT)
    except (RelayError, TimeoutError):
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    """Protocol version and the limits a client must respect."""
    config = request.app[CONFIG]
    return web.json_response(
        {"protocol": PROTOCOL_VERSION, "server": request.app[SERVER_NAME], "limits": config.info()}
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    metrics_ = request.app[METRICS]
    try:
        stats = await asyncio.wait_for(request.app[STORE].stats(), _HEALTH_TIMEOUT)
    except (RelayError, TimeoutError):
        stats = metrics_.last_stats  # the database is down: keep serving the rest
    body = metrics_.render(stats)
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    """The relay protocol: see ``docs/relay-protocol.md``."""
    app = request.app
    config, ops, metric = app[CONFIG], app[OPERATIONS], app[METRICS]
    connections = app[CONNECTIONS]
    if ops.shutting_down:
        metric.rejected["shutting_down"] += 1
        raise web.HTTPServiceUnavailable(text="The relay is shutting down.")
    if len(connections) >= config.limits.max_connections:
        metric.rejected["too_many_connections"] += 1
        raise web.HTTPServiceUnavailable(text="The relay has too many connections; retry later.")

    ws = web.WebSocketResponse(
        max_msg_size=config.limits.max_frame_bytes,
        heartbeat=30.0,
        compress=False,  # compression would leak plaintext-independent but size-revealing detail
    )
    await ws.prepare(request)
    nonce = os.urandom(NONCE_BYTES)
    conn = Connection(
        ws,
        nonce,
        queue_limit=config.limits.send_queue_bytes,
        bucket=TokenBucket(
            config.limits.appends_per_second, config.limits.append_burst, _monotonic()
        ),
        request_bucket=TokenBucket(
            config.limits.requests_per_second, config.limits.request_burst, _monotonic()
        ),
        metrics=metric,
        transport=request.transport,
    )
    conn.admission = _admission(config, request.query.get(ADMISSION_PARAM))
    connections.add(conn)
    metric.connections += 1
    hello: dict[str, Any] = {
        "t": "hello",
        "nonce": nonce,
        "server": app[SERVER_NAME],
        "limits": config.info(),
    }
    if app[STORE].generation:  # changes when the store is a restored copy (§6 of the protocol)
        hello["generation"] = app[STORE].generation
    try:
        conn.send(hello)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                metric.received_bytes += len(msg.data)
                await _handle_frame(conn, ops, msg.data)
            elif msg.type == WSMsgType.TEXT:
                metric.rejected["bad_frame"] += 1
                conn.send(
                    _error_frame(
                        None, ProtocolViolation("Frames must be binary msgpack, not text.")
                    )
                )
            elif msg.type == WSMsgType.ERROR:
                break
        if ws.close_code == 1009:
            metric.rejected["frame_too_large"] += 1
    finally:
        connections.discard(conn)
        metric.connections -= 1
        ops.hub.forget(conn)
        await conn.release()
    return ws


def _admission(config: RelayConfig, token: str | None) -> Admission | None:
    """The admission ``token`` names (compared in constant time), or None."""
    if token is None or not config.admission:
        return None
    found = None
    presented = token.encode()
    for admission in config.admission:
        if hmac.compare_digest(admission.token.encode(), presented):
            found = admission
    return found


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


def _error_frame(request_id: int | None, error: RelayError) -> dict[str, Any]:
    return {
        "t": "err",
        "id": request_id,
        "code": error.code,
        "message": error.message,
        **error.extra(),
    }


async def _handle_frame(conn: Connection, ops: Operations, data: bytes) -> None:
    metric = ops.metrics
    try:
        request = decode_request(data, max_bytes=ops.limits.max_frame_bytes)
    except ProtocolViolation as exc:
        metric.rejected[exc.code] += 1
        metric.count_request("invalid", exc.code)
        conn.send(_error_frame(request_id_of(data), exc))
        return
    op = type(request).__name__.lower()
    conn.busy += 1
    try:
        result = await ops.handle(conn, request)
    except RelayError as exc:
        metric.count_request(op, exc.code)
        if exc.code not in {"stale_epoch"}:
            metric.rejected[exc.code] += 1
        conn.send(_error_frame(request.id, exc))
    except (TimeoutError, ConnectionError):
        metric.count_request(op, StoreUnavailable.code)
        conn.send(_error_frame(request.id, StoreUnavailable()))
    except Exception:
        # Our bug. The traceback goes to the operator's log; it holds no request data
        # because no request field is ever put into an exception message.
        log.exception("unexpected error handling %s", op)
        metric.count_request(op, InternalError.code)
        conn.send(_error_frame(request.id, InternalError()))
    else:
        metric.count_request(op, "ok")
        conn.send({"t": "ok", "id": request.id, **result})
    finally:
        conn.busy -= 1
