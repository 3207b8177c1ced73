"""Baseline for the relay benchmark: a bare aiohttp WebSocket room broadcaster, no auth, no storage.

A client connects to ``/ws?room=NAME`` and joins that room; every binary message a
member sends is sent, unchanged, to every member of the room, the sender included
(the same fan-out as the relay's subscribe). It runs on uvloop when installed, as the
relay does, so both servers use the same event loop. Run it as
``python bench/baseline_server.py --port PORT``; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from aiohttp import WSMsgType, web

ROOMS: web.AppKey[dict[str, set[web.WebSocketResponse]]] = web.AppKey("rooms", dict)


async def healthz(request: web.Request) -> web.Response:
    """200 once the server accepts requests (the benchmark polls this before starting)."""
    return web.Response(text="ok")


async def room_socket(request: web.Request) -> web.WebSocketResponse:
    """Join ``?room=`` and broadcast every binary message to all members of the room."""
    rooms = request.app[ROOMS]
    name = request.query.get("room", "")
    ws = web.WebSocketResponse(max_msg_size=1024 * 1024, compress=False)
    await ws.prepare(request)
    members = rooms.setdefault(name, set())
    members.add(ws)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            for member in tuple(members):
                # A member that went away is dropped by its own handler's finally block.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await member.send_bytes(msg.data)
    finally:
        members.discard(ws)
        if not members:
            rooms.pop(name, None)
    return ws


def create_app() -> web.Application:
    """The baseline application: ``/ws`` and ``/healthz``."""
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_get("/ws", room_socket)
    app.router.add_get("/healthz", healthz)
    return app


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main(argv: list[str] | None = None) -> None:
    """Parse ``--port`` and serve on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda _: print(f"baseline listening on 127.0.0.1:{args.port}", file=sys.stderr),
        loop=_event_loop(),
    )


if __name__ == "__main__":
    main()
