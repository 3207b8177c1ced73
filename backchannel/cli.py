"""``backchannel``: the command line. Every command takes ``--home`` and ``--json``.

The passphrase comes from ``BACKCHANNEL_PASSPHRASE``, from ``--passphrase-file``, or
from a hidden prompt, so scripts and people both work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .client import Client
from .errors import BackchannelError
from .locations import default_home

__all__ = ["main"]

T = TypeVar("T")


@dataclasses.dataclass
class Options:
    home: Path
    json: bool
    passphrase_file: Path | None

    def passphrase(self, *, confirm: bool = False) -> str:
        env = os.environ.get("BACKCHANNEL_PASSPHRASE")
        if env:
            return env
        if self.passphrase_file is not None:
            try:
                return self.passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise click.ClickException(
                    f"Cannot read the passphrase file: {exc.strerror}."
                ) from None
        if not sys.stdin.isatty():
            raise click.ClickException(
                "No passphrase: set BACKCHANNEL_PASSPHRASE or pass --passphrase-file."
            )
        value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
        return value


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except BackchannelError as exc:
        raise click.ClickException(exc.user_message()) from None


def _emit(opts: Options, data: dict[str, Any], human: Callable[[], str]) -> None:
    click.echo(json.dumps(data, sort_keys=True) if opts.json else human())


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="BACKCHANNEL_HOME",
    help="Profile directory. [default: a per-user data directory]",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--passphrase-file", type=click.Path(path_type=Path), help="Read the passphrase from a file."
)
@click.version_option(package_name="backchannel", prog_name="backchannel")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, as_json: bool, passphrase_file: Path | None) -> None:
    """Backchannel: end-to-end encrypted rooms for confidential dialogue."""
    ctx.obj = Options(home or default_home(), as_json, passphrase_file)
    if ctx.invoked_subcommand is None:
        click.echo(
            "The terminal app is not built yet. Create a profile with `backchannel init --name NAME`, "
            "see `backchannel status`, or run a relay with `backchannel-relay serve`.",
            err=True,
        )
        ctx.exit(1)


@cli.command()
@click.option("--name", required=True, help="Your display name, as others will see it.")
@click.option(
    "--relay", "relay_url", help="ws:// or wss:// URL of a relay; default: a relay inside the app."
)
@click.option(
    "--listen", help="HOST:PORT for the built-in relay, e.g. 0.0.0.0:8765 to host a workshop LAN."
)
@click.pass_obj
def init(opts: Options, name: str, relay_url: str | None, listen: str | None) -> None:
    """Create a profile: a new identity, keys and an encrypted store."""
    passphrase = opts.passphrase(confirm=True)

    async def run() -> dict[str, Any]:
        client = await Client.create(
            opts.home, name=name, passphrase=passphrase, relay_url=relay_url, listen=listen
        )
        async with client:
            return dataclasses.asdict(client.info())

    info = _run(run())
    _emit(
        opts,
        info,
        lambda: f"Created the profile of {info['name']} in {opts.home} (relay {info['relay']}).",
    )


@cli.command()
@click.pass_obj
def status(opts: Options) -> None:
    """Show the profile: name, identity and relay."""
    passphrase = opts.passphrase()

    async def run() -> dict[str, Any]:
        async with await Client.open(opts.home, passphrase) as client:
            return dataclasses.asdict(client.info())

    info = _run(run())
    _emit(
        opts,
        info,
        lambda: "\n".join(
            [
                f"name:     {info['name']}",
                f"identity: {info['identity']}",
                f"relay:    {info['relay']}" + (" (built in)" if info["embedded_relay"] else ""),
            ]
        ),
    )


def main() -> None:
    """Entry point of the ``backchannel`` command."""
    cli()
