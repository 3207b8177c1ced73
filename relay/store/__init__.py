"""Mailbox storage backends behind one interface; :func:`open_store` picks one by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from .base import MailboxStore, StoreLimits

__all__ = [
    "MailboxStore",
    "StoreLimits",
    "mark_store_restored",
    "open_store",
    "sqlite_path_from_url",
]


def sqlite_path_from_url(url: str) -> Path:
    """The file of a ``sqlite:///absolute/path`` or ``sqlite:relative/path`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError("Not a sqlite: URL.")
    raw = unquote(parts.path if parts.netloc == "" else parts.netloc + parts.path)
    if raw.startswith("//"):
        raw = "/" + raw.lstrip("/")  # sqlite:////abs/path, the SQLAlchemy spelling
    if not raw or raw == "/":
        raise ConfigError(
            "A sqlite: URL needs a file path, e.g. sqlite:///var/lib/relay/relay.sqlite3."
        )
    return Path(raw).expanduser()


def open_store(url: str, limits: StoreLimits, *, pool_size: int = 10) -> MailboxStore:
    """Build (not yet open) the store a database URL names.

    ``pool_size``: connections to PostgreSQL per node (ignored for SQLite).

    Raises:
        ConfigError: an unknown scheme or a malformed URL.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(sqlite_path_from_url(url), limits)
    if scheme in {"postgres", "postgresql"}:
        from .postgres import PostgresStore

        return PostgresStore(url, limits, pool_size=pool_size)
    raise ConfigError(f"Unknown database URL scheme {scheme!r}; use sqlite:///path.")


async def mark_store_restored(url: str) -> None:
    """Flag the stopped store ``url`` names as a restored copy, so that the next relay
    to open it starts a new generation (see :mod:`.base`).

    Raises:
        ConfigError: an unknown scheme, no store there, or (SQLite) a relay is using it.
        StoreUnavailable: PostgreSQL cannot be reached.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        import asyncio

        from .sqlite import mark_store_restored as mark_sqlite

        await asyncio.to_thread(mark_sqlite, sqlite_path_from_url(url))
        return
    if scheme not in {"postgres", "postgresql"}:
        raise ConfigError(f"Unknown database URL scheme {scheme!r}; use sqlite:///path.")
    import asyncpg

    from ..errors import StoreUnavailable
    from .postgres import mark_restored

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise StoreUnavailable(f"Cannot reach PostgreSQL ({exc.__class__.__name__}).") from None
    try:
        await mark_restored(conn)
    finally:
        await conn.close()
