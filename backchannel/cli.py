"""``backchannel``: the command line. Every command takes ``--home`` and ``--json``.

The passphrase comes from ``BACKCHANNEL_PASSPHRASE``, from ``--passphrase-file``, or
from a hidden prompt, so scripts and people both work.

Commands that need the relay open the profile, connect, sync (read every followed
mailbox to its head), act, and sync again so that what they wrote has left the
outbox before the process exits. Read-only commands fall back to what this device
already has, with a warning, when the relay cannot be reached.

``--json`` shapes are stable: objects for single results, lists for ``rooms``,
``members`` and ``requests``, and one object per line for ``read``.

Human output shows what others wrote by the rules of :mod:`backchannel.safe_text`
(names, titles, bodies, file names, error texts): nothing a peer or the relay sends
can drive the terminal. A message is a header line, ``[time] name: text``, and its
further lines indented by four spaces; on a terminal, long lines are wrapped to its
width the same way. So no line a message produces can pass for another header.
``--json`` gives every string exactly as received (JSON escapes its controls).

A command that posts (``send``, ``edit``, ``react``, ``leave``...) reports success only
once the relay has acknowledged the post; a refusal is an error (exit 1), and a post
still queued on this device when the command ends exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from .client import Client
from .errors import BackchannelError
from .locations import default_home
from .safe_text import cell_width, clean, clean_lines
from .views import (
    Alert,
    ClientEvent,
    JoinAnswered,
    MemberView,
    MessageView,
    NewMessage,
    RemovedFromRoom,
    RequestView,
    RoomSummary,
    human_size,
)

__all__ = ["main"]

T = TypeVar("T")


@dataclasses.dataclass
class Options:
    home: Path
    json: bool
    passphrase_file: Path | None
    proxy: str | None = None

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
        raise click.ClickException(clean(exc.user_message(), multiline=True)) from None


def _emit(opts: Options, data: dict[str, Any], human: Callable[[], str]) -> None:
    click.echo(json.dumps(data, sort_keys=True) if opts.json else human())


class Duration(click.ParamType[int]):
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or bare seconds, as a number of seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", str(value).lower())
        if match is None:
            self.fail(
                f"{value!r} is not a duration; use seconds or a number with a unit, "
                "e.g. 90s, 30m, 12h, 7d or 2w.",
                param,
                ctx,
            )
        return int(match.group(1)) * _UNITS[match.group(2) or "s"]


DURATION = Duration()


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
@click.option(
    "--proxy",
    envvar="BACKCHANNEL_PROXY",
    help="SOCKS5 proxy for the relay connection, e.g. socks5h://127.0.0.1:9050 for Tor.",
)
@click.option(
    "--lock-after",
    type=DURATION,
    default="10m",
    show_default=True,
    envvar="BACKCHANNEL_LOCK_AFTER",
    help="The app locks its screen after this much idle time (0: never).",
)
@click.version_option(package_name="backchannel", prog_name="backchannel")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    as_json: bool,
    passphrase_file: Path | None,
    proxy: str | None,
    lock_after: int,
) -> None:
    """Backchannel: end-to-end encrypted rooms for confidential dialogue.

    With no command, opens the terminal app.
    """
    ctx.obj = Options(home or default_home(), as_json, passphrase_file, proxy)
    if ctx.invoked_subcommand is None:
        _run_app(ctx.obj, lock_after)


def _run_app(opts: Options, lock_after: int = 600) -> None:
    """``backchannel`` alone: the terminal app on ``--home``, through ``--proxy`` if given.

    A passphrase from ``BACKCHANNEL_PASSPHRASE`` or ``--passphrase-file`` is tried first;
    otherwise (or if it is wrong) the app asks for it.
    """
    from .tui import make_app  # Textual loads only for the app, not for the commands

    passphrase = os.environ.get("BACKCHANNEL_PASSPHRASE") or None
    if passphrase is None and opts.passphrase_file is not None:
        passphrase = opts.passphrase()
    make_app(
        opts.home,
        proxy=opts.proxy,
        passphrase=passphrase,
        idle_lock_seconds=float(lock_after),
        tune_gc=True,
    ).run()


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
        lambda: (
            f"Created the profile of {clean(info['name'])} in {clean(str(opts.home))} "
            f"(relay {clean(info['relay'])})."
        ),
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
                f"name:     {clean(info['name'])}",
                f"identity: {info['identity']}",
                f"relay:    {clean(info['relay'])}"
                + (" (built in)" if info["embedded_relay"] else ""),
            ]
        ),
    )


# -- shared machinery for the commands that talk to the relay ---------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclasses.dataclass
class Session:
    """A started client plus every event it produced while the command ran."""

    client: Client
    opts: Options
    seen: list[ClientEvent] = dataclasses.field(default_factory=list)
    synced: bool = True
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: The action synced after writing and judged the outcome itself (see :func:`_posted`).
    settled: bool = False

    async def sync(self) -> None:
        await self.client.sync()

    async def follow(self, start: int) -> AsyncIterator[ClientEvent]:
        """Every event from index ``start`` of :attr:`seen` on, waiting for new ones forever."""
        index = start
        while True:
            while index < len(self.seen):
                yield self.seen[index]
                index += 1
            self.arrived.clear()
            await self.arrived.wait()


async def _session(
    opts: Options,
    action: Callable[[Session], Awaitable[T]],
    *,
    writes: bool,
) -> T:
    """Open, start and sync the profile, run ``action``, sync again if it wrote, and close.

    A command that only reads shows what this device has when the relay is unreachable.
    """
    passphrase = opts.passphrase()
    client = await Client.open(opts.home, passphrase)
    session = Session(client, opts)

    async def collect() -> None:
        async for event in client.events():
            session.seen.append(event)
            session.arrived.set()

    collector: asyncio.Task[None] | None = None
    try:
        await client.start(proxy=opts.proxy)
        collector = asyncio.create_task(collect())
        try:
            await session.sync()
        except BackchannelError as exc:
            if writes:
                raise
            session.synced = False
            click.echo(
                f"Warning: {clean(exc.user_message())} Showing what this device already has.",
                err=True,
            )
        result = await action(session)
        if writes and not session.settled:
            await session.sync()
        await asyncio.sleep(0)  # let the collector take the last events
        return result
    finally:
        if collector is not None:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
        await client.close()


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True))


def _when(seconds: float) -> str:
    local = time.localtime(seconds)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def _message_json(m: MessageView) -> dict[str, Any]:
    return {
        "id": m.id,
        "room": m.room,
        "sender": m.sender,
        "sender_name": m.sender_name,
        "text": m.text,
        "time": m.time,
        "kind": m.kind,
        "reply_to": m.reply_to,
        "edited": m.edited,
        "deleted": m.deleted,
        "outgoing": m.outgoing,
        "delivered": m.delivered,
        "file": dataclasses.asdict(m.file) if m.file is not None else None,
    }


#: Continuation lines of a message (and wrapped parts of long lines) start with this, so
#: that no line but a header starts with "[": none can pass for another message.
INDENT = "    "
#: Wrapping never goes narrower than this many cells.
_MIN_WIDTH = 24


def _terminal_width() -> int | None:
    """The width to wrap human output to: the terminal's, or None when not writing to one."""
    if not sys.stdout.isatty():
        return None
    return max(_MIN_WIDTH, shutil.get_terminal_size().columns - 1)


def _fold(line: str, width: int) -> list[str]:
    """``line`` as rows of at most ``width`` cells; every row after the first is indented.

    Breaks at the last space that fits, else inside a word, so the terminal never has
    to wrap a row itself (it would continue at column 0).
    """
    if cell_width(line) <= width:
        return [line]
    rows: list[str] = []
    row, used = "", 0
    for ch in line:
        w = cell_width(ch)
        if used + w > width and row.strip():
            start = len(INDENT) if rows else 0
            cut = row.rfind(" ")
            if cut > start and row[start:cut].strip():
                rows.append(row[:cut].rstrip())
                row = INDENT + row[cut + 1 :]
            else:
                rows.append(row)
                row = INDENT
            used = cell_width(row)
        row += ch
        used += w
    rows.append(row)
    return rows


def _block(head: str, body: Sequence[str] = (), width: int | None = None) -> str:
    """A header line, then ``body``'s lines indented under it, wrapped to ``width`` if given.

    Args:
        head: the header, already cleaned; the first body line follows it.
        body: the message's lines, already cleaned (:func:`clean_lines`).
        width: the terminal's width in cells, or None (no wrapping).
    """
    lines = [head + (body[0] if body else "")]
    lines += [INDENT + line if line else "" for line in body[1:]]
    if width is not None:
        lines = [row for line in lines for row in _fold(line, width)]
    return "\n".join(lines)


def _message_line(m: MessageView, width: int | None = None) -> str:
    """A message as people read it: its header, then its further lines indented."""
    when = _when(m.time)
    head = f"[{when}] {clean(m.sender_name)}"
    if m.deleted:
        return _block(f"{head}: (deleted)", width=width)
    if m.file is not None:
        state = "" if m.file.complete else ", still arriving"
        size = f"{human_size(m.file.size)}{state}"
        return _block(f"{head} sent the file {clean(m.file.name)} ({size}); id {m.id}", width=width)
    if m.kind != "text":
        if m.text:
            return _block(f"[{when}] * ", clean_lines(m.text), width)
        return _block(f"{head}: ({clean(m.kind)})", width=width)
    body = clean_lines(m.text)
    if m.edited:
        body[-1] += " (edited)"
    return _block(f"{head}: ", body, width)


def _emit_message(opts: Options, m: MessageView) -> None:
    if opts.json:
        _print_json(_message_json(m))
    else:
        click.echo(_message_line(m, _terminal_width()))


#: How the client's notice of a post the relay refused begins (``Rejected.sentence``).
_REFUSED = "The relay refused a message"
#: What happens to a post that was not delivered.
_KEPT = (
    " It stays queued on this device and is offered to the relay again the next time "
    "this profile connects."
)


def _refusals(s: Session) -> list[str]:
    """The client's notices of posts the relay refused while this command ran.

    Any of them counts against what the command posted: a refused post holds back the
    posts queued after it in its room (the outbox keeps their order).
    """
    return [clean(e.text) for e in s.seen if isinstance(e, Alert) and e.text.startswith(_REFUSED)]


@dataclasses.dataclass(frozen=True)
class Posted:
    """What became of what a command posted (a message, an edit, a reaction...)."""

    #: The message as stored after the command, if the command posted one.
    message: MessageView | None = None
    #: Why it is not delivered (a sentence), or None: the relay acknowledged it.
    problem: str | None = None
    #: The relay refused it (else it is only still queued).
    refused: bool = False


async def _posted(s: Session, m: MessageView | None = None) -> Posted:
    """Sync, then say whether the relay acknowledged a post, refused it, or it is still queued.

    Args:
        s: the session that posted.
        m: the message posted, as the client returned it when it was queued (None for
            an edit, a deletion or a reaction: those count as delivered unless refused).
    """
    s.settled = True
    try:
        await s.sync()
    except BackchannelError as exc:
        return Posted(m, f"Not delivered yet: {clean(exc.user_message())}{_KEPT}")
    await asyncio.sleep(0)  # let the collector take the last events
    fresh = (await s.client.message(m.room, m.id) or m) if m is not None else None
    refused = _refusals(s)
    if fresh is not None and fresh.delivered:
        return Posted(fresh)
    if refused:
        return Posted(fresh, " ".join(refused) + _KEPT, refused=True)
    if fresh is not None:
        return Posted(fresh, "Not delivered yet: the relay has not acknowledged it." + _KEPT)
    return Posted()


def _report_post(opts: Options, posted: Posted, data: dict[str, Any], human: str) -> None:
    """Say what became of a post: success (exit 0), refused (1) or still queued (2).

    A message still queued is printed all the same (its id is needed to refer to it,
    and ``--json`` says ``"delivered": false``), with the reason on stderr.
    """
    if posted.refused:
        raise click.ClickException(posted.problem or "")
    if posted.problem is None or posted.message is not None:
        _emit(opts, data, lambda: human)
    if posted.problem is not None:
        click.echo(posted.problem, err=True)
        click.get_current_context().exit(2)


def _report_message(opts: Options, posted: Posted) -> None:
    m = posted.message
    assert m is not None
    _report_post(opts, posted, _message_json(m), _message_line(m, _terminal_width()))


def _member_line(m: MemberView) -> str:
    marks = []
    if m.me:
        marks.append("you")
    if m.verified:
        marks.append("verified")
    elif not m.me:
        marks.append("not verified")
    if m.key_changed:
        marks.append("KEY CHANGED: compare safety numbers again")
    return f"{clean(m.name):<20} {m.role:<12} {', '.join(marks):<24} {m.id}"


def _room_line(r: RoomSummary) -> str:
    extra = f", {r.pending_requests} waiting to join" if r.pending_requests else ""
    left = "" if r.joined else " (left)"
    return f"{clean(r.title)}{left}: {r.role}, {r.members} members{extra}  [{r.id}]"


# -- rooms --------------------------------------------------------------------------------------


@cli.command()
@click.pass_obj
def rooms(opts: Options) -> None:
    """List your rooms (JSON: id, title, role, members, ...)."""

    async def action(s: Session) -> list[RoomSummary]:
        return await s.client.rooms()

    found = _run(_session(opts, action, writes=False))
    if opts.json:
        _print_json([dataclasses.asdict(r) for r in found])
    elif not found:
        click.echo("No rooms yet. Create one with `backchannel room create TITLE`.")
    else:
        for r in found:
            click.echo(_room_line(r))


@cli.group()
def room() -> None:
    """Create rooms and invite people to them."""


@room.command("create")
@click.argument("title")
@click.option(
    "--approval",
    type=click.Choice(["manual", "auto"]),
    default="manual",
    show_default=True,
    help="manual: a facilitator decides each join request; auto: invite links admit directly.",
)
@click.option(
    "--retention",
    type=DURATION,
    default=0,
    help="Erase messages this old on every device (e.g. 7d); default: keep them.",
)
@click.pass_obj
def room_create(opts: Options, title: str, approval: str, retention: int) -> None:
    """Open a room with you as its facilitator."""

    async def action(s: Session) -> RoomSummary:
        return await s.client.create_room(title, approval=approval, retention_seconds=retention)

    r = _run(_session(opts, action, writes=True))
    data = dataclasses.asdict(r) | {"room": r.id}
    _emit(opts, data, lambda: f"Created the room “{clean(r.title)}” ({r.id}).")


@room.command("invite")
@click.argument("room_name", metavar="ROOM")
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--expires", type=DURATION, default="7d", show_default=True, help="e.g. 30m, 12h, 7d."
)
@click.pass_obj
def room_invite(opts: Options, room_name: str, uses: int, expires: int) -> None:
    """Print a new invite link for ROOM (facilitators only). Share it privately."""
    if expires <= 0:
        raise click.BadParameter("an invite must be valid for some time.", param_hint="--expires")

    async def action(s: Session) -> str:
        return await s.client.invite(room_name, uses=uses, expires_in=expires)

    link = _run(_session(opts, action, writes=True))
    _emit(opts, {"link": link, "uses": uses, "expires_in": expires}, lambda: link)


@room.command("code")
@click.argument("room_name", metavar="ROOM")
@click.pass_obj
def room_code(opts: Options, room_name: str) -> None:
    """Show ROOM's check code: compare it with the others out of band.

    Everyone who sees the same code sees the same room; a relay showing members
    different histories cannot make the codes match.
    """

    async def action(s: Session) -> str:
        return s.client.room_code(room_name)

    code = _run(_session(opts, action, writes=False))
    _emit(opts, {"room": room_name, "code": code}, lambda: code)


@room.command("settings")
@click.argument("room_name", metavar="ROOM")
@click.option("--title", help="A new title.")
@click.option("--approval", type=click.Choice(["manual", "auto"]), help="How joins are approved.")
@click.option("--retention", type=DURATION, help="Erase messages this old (0: keep them).")
@click.pass_obj
def room_settings(
    opts: Options,
    room_name: str,
    title: str | None,
    approval: str | None,
    retention: int | None,
) -> None:
    """Change ROOM's title, join approval or retention (facilitators only)."""

    async def action(s: Session) -> RoomSummary:
        await s.client.update_room(
            room_name, title=title, approval=approval, retention_seconds=retention
        )
        return await s.client.room(room_name)

    summary = _run(_session(opts, action, writes=True))
    _emit(opts, dataclasses.asdict(summary), lambda: f"{clean(summary.title)}: settings saved.")


@room.command("role")
@click.argument("room_name", metavar="ROOM")
@click.argument("member")
@click.argument("role", type=click.Choice(["facilitator", "participant", "observer"]))
@click.pass_obj
def room_role(opts: Options, room_name: str, member: str, role: str) -> None:
    """Give MEMBER a ROLE in ROOM (facilitators only)."""

    async def action(s: Session) -> None:
        await s.client.set_role(room_name, member, role)

    _run(_session(opts, action, writes=True))
    _emit(opts, {"member": member, "role": role}, lambda: f"{clean(member)} is now {role}.")


# -- joining ----------------------------------------------------------------------------------


@cli.command()
@click.argument("link")
@click.option(
    "--wait",
    type=DURATION,
    default=0,
    help="Wait this long for a facilitator's answer (exit 0 approved, 1 denied, 2 no answer).",
)
@click.pass_obj
def join(opts: Options, link: str, wait: int) -> None:
    """Ask to join a room with an invite LINK."""

    async def action(s: Session) -> tuple[str, JoinAnswered | None]:
        rid = await s.client.join(link)
        await s.sync()
        answer = await s.client.wait_join(rid, wait) if wait > 0 else None
        return rid, answer

    rid, answer = _run(_session(opts, action, writes=True))
    if wait <= 0:
        _emit(
            opts,
            {"request": rid, "status": "pending"},
            lambda: (
                "Asked to join; a facilitator will answer. "
                "Run `backchannel sync` or `backchannel rooms` later to see the room."
            ),
        )
        return
    if answer is None:
        _emit(
            opts,
            {"request": rid, "status": "pending"},
            lambda: "No answer yet; run `backchannel sync` later to see if you were let in.",
        )
        click.get_current_context().exit(2)
    elif answer.approved:
        _emit(
            opts,
            {"request": rid, "status": "approved", "room": answer.room},
            lambda: f"Approved: you are in the room {clean(answer.room or '')}.",
        )
    else:
        _emit(
            opts,
            {"request": rid, "status": "denied", "room": None},
            lambda: "A facilitator turned the request away.",
        )
        click.get_current_context().exit(1)


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.pass_obj
def requests(opts: Options, room_name: str) -> None:
    """List join requests waiting in ROOM, with each requester's safety number."""

    async def action(s: Session) -> list[RequestView]:
        return await s.client.requests(room_name)

    found = _run(_session(opts, action, writes=False))
    if opts.json:
        _print_json([dataclasses.asdict(r) for r in found])
    elif not found:
        click.echo("No one is waiting.")
    else:
        for r in found:
            click.echo(f"{r.id}  {clean(r.name)}  (asked {_when(r.received_at)})")
            click.echo(f"    safety number: {r.safety_number}")


def _decide(opts: Options, room_name: str, request: str, *, approve: bool) -> None:
    async def action(s: Session) -> None:
        if approve:
            await s.client.approve(room_name, request)
        else:
            await s.client.deny(room_name, request)

    _run(_session(opts, action, writes=True))
    status = "approved" if approve else "denied"
    _emit(
        opts,
        {"request": request, "status": status},
        lambda: f"Request {clean(request)} {status}.",
    )


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("request")
@click.pass_obj
def approve(opts: Options, room_name: str, request: str) -> None:
    """Let the requester REQUEST into ROOM."""
    _decide(opts, room_name, request, approve=True)


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("request")
@click.pass_obj
def deny(opts: Options, room_name: str, request: str) -> None:
    """Turn the join request REQUEST away; the requester is told."""
    _decide(opts, room_name, request, approve=False)


# -- talking ----------------------------------------------------------------------------------


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("text")
@click.option("--reply-to", help="The id of the message this answers.")
@click.pass_obj
def send(opts: Options, room_name: str, text: str, reply_to: str | None) -> None:
    """Send TEXT to ROOM."""

    async def action(s: Session) -> Posted:
        m = await s.client.send(room_name, text, reply_to=reply_to)
        return await _posted(s, m)

    _report_message(opts, _run(_session(opts, action, writes=True)))


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.argument("text")
@click.pass_obj
def edit(opts: Options, room_name: str, message: str, text: str) -> None:
    """Replace the TEXT of one of your messages in ROOM (everyone sees it was edited)."""

    async def action(s: Session) -> Posted:
        await s.client.edit(room_name, message, text)
        return await _posted(s)

    posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"id": message, "edited": True}, "Edited.")


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.pass_obj
def delete(opts: Options, room_name: str, message: str) -> None:
    """Delete one of your messages in ROOM for everyone."""

    async def action(s: Session) -> Posted:
        await s.client.delete(room_name, message)
        return await _posted(s)

    posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"id": message, "deleted": True}, "Deleted.")


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.argument("emoji")
@click.option("--remove", is_flag=True, help="Take the reaction back.")
@click.pass_obj
def react(opts: Options, room_name: str, message: str, emoji: str, remove: bool) -> None:
    """React to a MESSAGE in ROOM with an EMOJI."""

    async def action(s: Session) -> Posted:
        await s.client.react(room_name, message, emoji, remove=remove)
        return await _posted(s)

    posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"id": message, "emoji": emoji, "removed": remove}, "Done.")


@cli.command("send-file")
@click.argument("room_name", metavar="ROOM")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def send_file(opts: Options, room_name: str, path: Path) -> None:
    """Send the file at PATH to ROOM."""

    async def action(s: Session) -> Posted:
        m = await s.client.send_file(room_name, path)
        return await _posted(s, m)

    _report_message(opts, _run(_session(opts, action, writes=True)))


@cli.command("save-file")
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.argument("dest", type=click.Path(path_type=Path))
@click.pass_obj
def save_file(opts: Options, room_name: str, message: str, dest: Path) -> None:
    """Save the file of MESSAGE (its id, from `read`) to DEST (a file or a directory)."""

    async def action(s: Session) -> Path:
        return await s.client.save_file(room_name, message, dest)

    saved = _run(_session(opts, action, writes=False))
    _emit(opts, {"path": str(saved)}, lambda: f"Saved {clean(str(saved))}.")


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages until Ctrl-C.")
@click.pass_obj
def read(opts: Options, room_name: str, limit: int, follow: bool) -> None:
    """Print the latest messages of ROOM (JSON: one object per line)."""

    async def action(s: Session) -> None:
        page = await s.client.history(room_name, limit=limit)
        shown = {m.id for m in page}
        for m in page:
            _emit_message(opts, m)
        if not follow:
            return
        room_id = (await s.client.room(room_name)).id
        async for event in s.follow(0):
            if isinstance(event, NewMessage) and event.message.room == room_id:
                if event.message.id not in shown:
                    shown.add(event.message.id)
                    _emit_message(opts, event.message)
            elif isinstance(event, RemovedFromRoom) and event.room == room_id:
                click.echo("You are no longer in this room.", err=True)
                return
            elif isinstance(event, Alert) and event.room in (None, room_id):
                click.echo(f"Note: {clean(event.text)}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        _run(_session(opts, action, writes=False))


# -- members ----------------------------------------------------------------------------------


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.pass_obj
def members(opts: Options, room_name: str) -> None:
    """List the members of ROOM with their roles and verification."""

    async def action(s: Session) -> list[MemberView]:
        return await s.client.members(room_name)

    found = _run(_session(opts, action, writes=False))
    if opts.json:
        _print_json([dataclasses.asdict(m) for m in found])
    else:
        for m in found:
            click.echo(_member_line(m))


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("member")
@click.pass_obj
def remove(opts: Options, room_name: str, member: str) -> None:
    """Remove MEMBER (an id or an unambiguous name) from ROOM (facilitators only)."""

    async def action(s: Session) -> None:
        await s.client.remove(room_name, member)

    _run(_session(opts, action, writes=True))
    _emit(opts, {"removed": member}, lambda: f"Removed {clean(member)}.")


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.option(
    "--wait",
    type=DURATION,
    default=15,
    help="Wait this long for a facilitator to let you go (exit 0 left, 2 still waiting).",
)
@click.pass_obj
def leave(opts: Options, room_name: str, wait: int) -> None:
    """Leave ROOM: a facilitator's client lets you go, and then you are out.

    The last facilitator cannot leave: make another member a facilitator first
    (`backchannel room role ROOM MEMBER facilitator`).
    """

    async def action(s: Session) -> tuple[str, Posted]:
        room_id = (await s.client.room(room_name)).id
        await s.client.leave(room_name)
        posted = await _posted(s)
        if posted.problem is None and not await s.client.wait_left(room_id, wait):
            posted = Posted(problem=_LEAVE_WAITING)
        return room_id, posted

    room_id, posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"left": room_id}, f"Left the room {clean(room_name)}.")


_LEAVE_WAITING = (
    "Not out yet: you asked to leave, and no facilitator's client has let you go so far. "
    "Until one does you are still a member, and your leave is asked for again whenever "
    "this profile connects (`backchannel sync`)."
)


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("member")
@click.option(
    "--confirm", is_flag=True, help="Record that you compared the safety number and it matched."
)
@click.pass_obj
def verify(opts: Options, room_name: str, member: str, confirm: bool) -> None:
    """Show MEMBER's safety number in ROOM; with --confirm, mark them verified.

    Compare the number with the person over another channel (in person, a call):
    only mark them verified if both of you see the same digits.
    """

    async def action(s: Session) -> tuple[MemberView, str]:
        if confirm:
            view = await s.client.verify(room_name, member)
            return view, (await s.client.safety_number(room_name, view.id))[1]
        return await s.client.safety_number(room_name, member)

    view, number = _run(_session(opts, action, writes=confirm))
    data = {"member": dataclasses.asdict(view), "safety_number": number, "verified": view.verified}
    if confirm:
        _emit(opts, data, lambda: f"{clean(view.name)} is now verified on this device.")
    else:
        _emit(
            opts,
            data,
            lambda: (
                f"Safety number with {clean(view.name)}:\n    {number}\n"
                "Compare it with them out of band, then run this again with --confirm."
            ),
        )


@cli.command()
@click.pass_obj
def sync(opts: Options) -> None:
    """Fetch everything waiting on the relay and send everything queued."""

    async def action(s: Session) -> tuple[list[RoomSummary], list[ClientEvent]]:
        return await s.client.rooms(), s.seen  # the collector keeps filling s.seen

    found, seen = _run(_session(opts, action, writes=True))
    answers = [e for e in seen if isinstance(e, JoinAnswered)]
    removed = [e for e in seen if isinstance(e, RemovedFromRoom)]
    new = [e for e in seen if isinstance(e, NewMessage) and not e.message.outgoing]
    data = {
        "rooms": len(found),
        "new_messages": len(new),
        "joins": [dataclasses.asdict(a) for a in answers],
        "removed_from": [e.room for e in removed],
    }

    def human() -> str:
        lines = [f"Synced: {len(found)} rooms, {len(new)} new messages."]
        for a in answers:
            lines.append(
                f"Join request {a.request_id}: "
                + (f"approved, you are in {clean(a.room or '')}." if a.approved else "turned away.")
            )
        for e in removed:
            lines.append(f"You are no longer in the room {clean(e.room)}.")
        return "\n".join(lines)

    _emit(opts, data, human)


@cli.command()
@click.pass_obj
def passphrase(opts: Options) -> None:
    """Change the profile's passphrase (re-encrypts the store under the new one)."""
    old = opts.passphrase()
    if not sys.stdin.isatty():
        new = os.environ.get("BACKCHANNEL_NEW_PASSPHRASE", "")
        if not new:
            raise click.ClickException(
                "No new passphrase: set BACKCHANNEL_NEW_PASSPHRASE, or run this in a terminal."
            )
    else:
        new = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True)

    async def run() -> None:
        async with await Client.open(opts.home, old) as client:
            await client.change_passphrase(old, new)

    _run(run())
    _emit(
        opts, {"changed": True}, lambda: "The passphrase is changed; use the new one from now on."
    )


def main() -> None:
    """Entry point of the ``backchannel`` command."""
    cli()
