"""``backchannel-relay``: run the blind relay, or back its store up."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from .app import create_app
from .config import RelayConfig, load_config
from .errors import ConfigError, RelayError
from .store import mark_store_restored, sqlite_path_from_url
from .store.sqlite import backup_store

__all__ = ["main"]


class _NoPeerDetails(logging.Filter):
    """aiohttp's loggers put the peer's address into some messages ("Error handling
    request from <ip>", "<ip>: Client protocols …"); keep the event, drop the address."""

    _ADDRESS = re.compile(
        r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[?[0-9A-Fa-f]*:[0-9A-Fa-f:]+\]?(?::\d+)?"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiohttp"):
            record.msg = self._ADDRESS.sub("<peer>", record.getMessage())
            record.args = ()
        return True


def _configure_logging(level: str) -> None:
    # No client address appears anywhere: the access log is off, and the one aiohttp
    # logger that names peers is filtered.
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoPeerDetails())


def _ssl_context(config: RelayConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"Cannot load the TLS certificate or key: {exc.__class__.__name__}."
        ) from None
    return context


def _load(config_file: Path | None, **overrides: Any) -> RelayConfig:
    try:
        return load_config(os.environ, overrides, config_file)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backchannel", prog_name="backchannel-relay")
def cli() -> None:
    """The Backchannel blind relay: stores ciphertext it cannot read, for people it cannot name."""


@cli.command()
@click.option(
    "--host", help="Address to listen on. [default: 127.0.0.1; env BACKCHANNEL_RELAY_HOST]"
)
@click.option(
    "--port", type=int, help="Port to listen on. [default: 8765; env BACKCHANNEL_RELAY_PORT]"
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Directory of the SQLite store.")
@click.option(
    "--database-url",
    help="sqlite:///path or postgresql://user@host/db (default: SQLite in the data directory).",
)
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML configuration file."
)
@click.option(
    "--tls-cert", type=click.Path(path_type=Path), help="PEM certificate chain for wss://."
)
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key for --tls-cert.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level."
)
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the relay until SIGTERM or Ctrl-C.

    Every flag can also be set as BACKCHANNEL_RELAY_<NAME> or in the --config file;
    flags win over the environment, which wins over the file.
    """
    config = _load(config_file, **flags)
    _configure_logging(config.log_level)
    try:
        context = _ssl_context(config)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    scheme = "wss" if context else "ws"
    store = config.store_url().split(":", 1)[0]

    def announce(_: str) -> None:
        click.echo(
            f"Backchannel relay listening on {scheme}://{config.host}:{config.port}/v1/ws "
            f"({store} store in {config.data_dir if store == 'sqlite' else 'the database'}). "
            "Stop with Ctrl-C.",
            err=True,
        )

    try:
        web.run_app(
            create_app(config),
            host=config.host,
            port=config.port,
            ssl_context=context,
            access_log=None,
            shutdown_timeout=config.shutdown_timeout + 5,
            print=announce,
            loop=_event_loop(),
        )
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    except RelayError as exc:  # e.g. the database is unreachable at start
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(
            f"Cannot listen on {config.host}:{config.port}: {exc.strerror or exc}."
        ) from None


@cli.command()
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), help="Directory of the SQLite store.")
@click.option("--database-url", help="sqlite:///path of the store to back up.")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML configuration file."
)
def backup(destination: Path, config_file: Path | None, **flags: Any) -> None:
    """Copy the SQLite store to DESTINATION consistently, while the relay runs."""
    config = _load(config_file, **flags)
    url = config.store_url()
    if not url.startswith("sqlite:"):
        raise click.UsageError("backup copies SQLite stores; back PostgreSQL up with pg_dump.")
    source = sqlite_path_from_url(url)
    if not source.exists():
        raise click.ClickException(f"There is no store at {source}.")
    if destination.exists():
        raise click.ClickException(f"{destination} already exists; choose a new file.")
    # SQLite's online backup (a consistent snapshot, writers keep going), marked as a
    # restored copy: a relay started on it begins a new generation.
    backup_store(source, destination)
    click.echo(f"Backed up the store to {destination}.", err=True)


@cli.command("mark-restored")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Directory of the SQLite store.")
@click.option("--database-url", help="sqlite:///path or postgresql://… of the restored store.")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML configuration file."
)
def mark_restored(config_file: Path | None, **flags: Any) -> None:
    """Mark a store restored by other means than `backup` (PostgreSQL, file copies).

    Run it after the restore, with every relay node stopped. The next start begins a
    new generation: clients are told, and sequence numbers and epochs continue above
    everything handed out before, so no client skips or repeats an entry.
    """
    config = _load(config_file, **flags)
    try:
        asyncio.run(mark_store_restored(config.store_url()))
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    except RelayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(
        "Marked the store as restored; it starts a new generation at the next start.", err=True
    )


@cli.command()
@click.option("--database-url", help="postgresql://… (SQLite stores migrate themselves at start).")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML configuration file."
)
def migrate(config_file: Path | None, **flags: Any) -> None:
    """Apply pending schema migrations to the configured store, then exit.

    `serve` also applies them at start; run this before rolling out a new version on
    several nodes, so no node starts on a schema it does not know.
    """
    config = _load(config_file, **flags)
    url = config.store_url()

    async def run() -> int:
        if url.startswith("sqlite:"):
            import sqlite3 as sqlite

            from .store.sqlite import apply_migrations as sqlite_migrations

            path = sqlite_path_from_url(url)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite.connect(path, isolation_level=None)
            try:
                return sqlite_migrations(conn)
            finally:
                conn.close()
        import asyncpg

        from .store.postgres import apply_migrations as pg_migrations

        try:
            pg = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise click.ClickException(
                f"Cannot reach PostgreSQL: {exc.__class__.__name__}."
            ) from None
        try:
            return await pg_migrations(pg)
        finally:
            await pg.close()

    version = asyncio.run(run())
    click.echo(f"The store is at schema version {version}.", err=True)


@cli.command("migrate-store")
@click.option(
    "--from", "source", required=True, help="sqlite:///path/to/relay.sqlite3 to copy from."
)
@click.option("--to", "target", required=True, help="postgresql://… to copy into.")
def migrate_store(source: str, target: str) -> None:
    """Copy every mailbox and entry of a SQLite store into PostgreSQL.

    Stop the relay that uses the SQLite store first. The copy is one transaction:
    it lands whole or not at all, and it refuses to overwrite mailboxes that already
    exist in the target.
    """
    from .store.migrate import copy_sqlite_to_postgres

    try:
        mailboxes, entries = asyncio.run(copy_sqlite_to_postgres(source, target))
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    except RelayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Copied {mailboxes} mailboxes and {entries} entries into PostgreSQL.", err=True)


def main() -> None:
    """Entry point of the ``backchannel-relay`` command."""
    cli()


if __name__ == "__main__":
    main()
