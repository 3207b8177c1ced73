"""PostgreSQL for the relay benchmark: which server, is it there, and a fresh schema per phase.

The server is ``$BACKCHANNEL_TEST_POSTGRES`` (the test suite's variable) or
``postgresql://postgres@127.0.0.1:5432/test``. Each phase gets its own schema, named
after the benchmark's pid and the phase; the relay nodes find it through
``?search_path=`` in their database URL (asyncpg passes unknown URL parameters on as
server settings) and apply their migrations into it at start. The schema is dropped,
with everything in it, when the phase ends, also when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "entry_stats",
    "fresh_schema",
    "postgres_url",
    "redacted",
    "unreachable",
]

ENV_VAR = "BACKCHANNEL_TEST_POSTGRES"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_TIMEOUT = 5.0


def postgres_url() -> str:
    """The server to benchmark against."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def unreachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``; otherwise why not, in a few words."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=_TIMEOUT)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), _TIMEOUT + 1))
    except Exception as exc:  # any failure means "skip": say which
        return f"{exc.__class__.__name__}: {exc}".strip().rstrip(":")
    return None


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = "&".join(p for p in (parts.query, f"search_path={schema}") if p)
    return urlunsplit(parts._replace(query=query))


async def _execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=_TIMEOUT)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_schema(url: str, phase: str) -> Iterator[str]:
    """Create schema ``bench_<pid>_<phase>``; yield the URL that selects it; drop it after."""
    schema = f"bench_{os.getpid()}_{re.sub(r'[^a-z0-9_]', '_', phase.lower())}"
    asyncio.run(
        _execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
    )
    try:
        yield _with_search_path(url, schema)
    finally:
        asyncio.run(_execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def entry_stats(url: str) -> tuple[int, int]:
    """(index and sequential scans, rows inserted) of ``relay_entries`` in the URL's schema.

    Only this phase's relay nodes use the schema, so unlike database-wide counters these
    are ours alone. PostgreSQL publishes a backend's counters about once a second, so
    over a window of a few seconds they are approximate.
    """
    import asyncpg

    async def read() -> tuple[int, int]:
        conn = await asyncpg.connect(url, timeout=_TIMEOUT)
        try:
            row = await conn.fetchrow(
                "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0), n_tup_ins "
                "FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema() AND relname = 'relay_entries'"
            )
            return (0, 0) if row is None else (int(row[0]), int(row[1]))
        finally:
            await conn.close()

    return asyncio.run(read())
