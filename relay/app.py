"""The relay application factory: routes, resources and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import metadata

from aiohttp import WSCloseCode, web

from . import handlers
from .appkeys import CONFIG, CONNECTIONS, METRICS, OPERATIONS, SERVER_NAME, STORE
from .config import RelayConfig
from .errors import RelayError
from .hub import Hub
from .metrics import RelayMetrics
from .middlewares import error_middleware
from .operations import Operations
from .store import open_store
from .store.base import MailboxStore, StoreLimits

__all__ = ["create_app", "server_name", "store_limits"]

log = logging.getLogger(__name__)


def server_name() -> str:
    try:
        return f"backchannel-relay/{metadata.version('backchannel')}"
    except metadata.PackageNotFoundError:  # running from a source tree
        return "backchannel-relay/dev"


def store_limits(config: RelayConfig) -> StoreLimits:
    """The quotas the store enforces, taken from the relay configuration."""
    lim = config.limits
    return StoreLimits(
        mailbox_max_entries=lim.mailbox_max_entries,
        mailbox_max_bytes=lim.mailbox_max_bytes,
        store_max_bytes=lim.store_max_bytes,
        min_free_disk_bytes=lim.min_free_disk_bytes,
        expiry_granularity=config.expiry_granularity,
        group_commit_max=config.group_commit_max,
    )


def create_app(
    config: RelayConfig,
    *,
    store: MailboxStore | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the relay application.

    Args:
        config: the relay settings.
        store: a store to use instead of the one ``config.store_url()`` names (tests);
            it is opened and closed with the app either way.
        clock: wall-clock time in seconds, used for expiry only.

    Returns:
        An application to hand to ``web.run_app`` or an ``AppRunner``.
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    the_store = store or open_store(
        config.store_url(), store_limits(config), pool_size=config.database_pool_size
    )
    metrics = RelayMetrics()
    hub = Hub(
        the_store,
        metrics,
        clock,
        page_entries=config.limits.max_fetch,
        page_bytes=config.limits.max_fetch_bytes,
    )
    app[CONFIG] = config
    app[STORE] = the_store
    app[METRICS] = metrics
    app[OPERATIONS] = Operations(config, the_store, hub, metrics, clock)
    app[CONNECTIONS] = set()
    app[SERVER_NAME] = server_name()

    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/v1/info", handlers.info)
    app.router.add_get("/v1/ws", handlers.websocket)
    if config.metrics:
        app.router.add_get("/metrics", handlers.metrics)

    app.on_response_prepare.append(_plain_server_header)
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(_sweeper_context(clock))
    app.on_shutdown.append(_graceful_shutdown)
    return app


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # The default names the Python and aiohttp versions: free help for an attacker.
    response.headers["Server"] = "backchannel-relay"


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    yield
    # Runs after every handler finished: queued writes are committed before we exit.
    await store.close()


def _sweeper_context(
    clock: Callable[[], float],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep_forever(app, clock), name="relay-sweeper")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return context


async def _sweep_forever(app: web.Application, clock: Callable[[], float]) -> None:
    store, metrics = app[STORE], app[METRICS]
    interval = app[CONFIG].sweep_interval
    while True:
        try:
            result = await store.sweep(clock())
        except RelayError as exc:
            log.warning("expiry sweep failed: %s", exc.code)
        else:
            metrics.expired += result.entries
            metrics.expired_mailboxes += result.mailboxes
            if result.entries or result.mailboxes:
                log.debug("swept %d entries, %d mailboxes", result.entries, result.mailboxes)
        await asyncio.sleep(interval)


async def _graceful_shutdown(app: web.Application) -> None:
    """Refuse new work, let in-flight requests finish, then close every socket with 1001."""
    ops = app[OPERATIONS]
    ops.shutting_down = True
    open_connections = app[CONNECTIONS]
    connections = list(open_connections)
    deadline = time.monotonic() + app[CONFIG].shutdown_timeout
    # Polling is fine here: it runs once, at shutdown, for at most shutdown_timeout.
    while any(c.busy for c in connections) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for conn in connections:
        await conn.flush(max(0.0, deadline - time.monotonic()))
    await asyncio.gather(
        *(c.close(WSCloseCode.GOING_AWAY, "relay shutting down") for c in connections),
        return_exceptions=True,
    )
