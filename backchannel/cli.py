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
further lines indented by four spaces. Every line of human output, on stdout or
stderr (messages, notes, errors, rooms, members...), is folded to the width of the
terminal, or of ``$COLUMNS`` (else 80) when the output is not a terminal, and its
further rows are indented the same way (:func:`_echo`): the terminal, or a pager,
never wraps a row itself, so no text from others starts a row of its own and no
line can pass for another message's header. ``--json`` gives every string exactly
as received (JSON escapes its controls).

A command that posts (``send``, ``edit``, ``react``, ``leave``...) reports success only
once the relay has acknowledged that very post; a refusal is an error (exit 1), and a
post still queued on this device when the command ends exits 2.

The client's log is not shown (a library's warnings are not for the person at the
terminal) unless ``--verbose`` or ``BACKCHANNEL_LOG=debug|info|warning|error`` asks
for it; then each record is cleaned and folded like the rest, after ``log: ``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from .client import Client
from .errors import BackchannelError
from .locations import default_home
from .safe_text import cell_width, char_width, clean, clean_lines
from .views import (
    Alert,
    ClientEvent,
    JoinAnswered,
    MemberView,
    MessageView,
    NewMessage,
    PostRefused,
    QueuedPost,
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
                raise Failure(f"Cannot read the passphrase file: {exc.strerror}.") from None
        if not sys.stdin.isatty():
            raise Failure("No passphrase: set BACKCHANNEL_PASSPHRASE or pass --passphrase-file.")
        value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
        return value


class Failure(click.ClickException):
    """A command failed: ``Error:`` and a sentence on stderr, exit 1.

    Folded like all human output (:func:`_echo`); a sentence of several lines has its
    further lines indented, since it may quote others' words (a file name).
    """

    def show(self, file: IO[Any] | None = None) -> None:
        head, *rest = self.format_message().split("\n")
        text = _block("Error: ", [head, *rest], _terminal_width(err=True))
        click.echo(text, file=file, err=file is None)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except BackchannelError as exc:
        raise Failure(clean(exc.user_message(), multiline=True)) from None


def _emit(opts: Options, data: dict[str, Any], human: Callable[[], str]) -> None:
    if opts.json:
        _print_json(data)
    else:
        _echo(human())


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
@click.option(
    "--verbose",
    is_flag=True,
    help="Show the client's log on stderr (BACKCHANNEL_LOG=debug|info|warning|error: its level).",
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
    verbose: bool,
) -> None:
    """Backchannel: end-to-end encrypted rooms for confidential dialogue.

    With no command, opens the terminal app.
    """
    _route_logs(_log_level(verbose))
    ctx.obj = Options(home or default_home(), as_json, passphrase_file, proxy)
    if ctx.invoked_subcommand is None:
        _run_app(ctx.obj, lock_after)


# -- the log ----------------------------------------------------------------------------------

#: Where log records go by default: nowhere (not Python's last-resort handler on stderr).
_QUIET = logging.NullHandler()
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS |= {"error": logging.ERROR}


class _LogLines(logging.Handler):
    """Log records on stderr for ``--verbose``: cleaned, after ``log:``, folded and indented."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lines = clean(self.format(record), multiline=True).split("\n")
            click.echo(_block("log: ", lines, _terminal_width(err=True)), err=True)
        except Exception:
            self.handleError(record)


_LOUD = _LogLines()


def _log_level(verbose: bool) -> int | None:
    """The level of log records to show: ``BACKCHANNEL_LOG``'s, INFO for ``--verbose``, or None."""
    name = os.environ.get("BACKCHANNEL_LOG", "").strip().lower()
    if name in ("", "off", "none"):
        return logging.INFO if verbose else None
    if name not in _LEVELS:
        raise click.UsageError("BACKCHANNEL_LOG takes debug, info, warning, error or off.")
    return _LEVELS[name]


def _route_logs(level: int | None) -> None:
    """Send log records to stderr from ``level`` on, or (None) nowhere."""
    root = logging.getLogger()
    root.removeHandler(_QUIET)
    root.removeHandler(_LOUD)
    if level is None:
        root.addHandler(_QUIET)
        return
    _LOUD.setLevel(level)
    root.addHandler(_LOUD)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)


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
            _echo(
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
        "refused": m.refused,
        "file": dataclasses.asdict(m.file) if m.file is not None else None,
    }


#: Continuation lines of a message (and folded parts of long lines) start with this, so
#: that no line but a header starts with "[": none can pass for another message.
INDENT = "    "
#: Folding never goes narrower than this many cells.
_MIN_WIDTH = 24
#: The width of a pipe or a file when ``$COLUMNS`` does not say.
_DEFAULT_COLUMNS = 80


def _tty_columns(stream: Any) -> int | None:
    """The width of the terminal ``stream`` writes to, or None if it is not a terminal."""
    try:
        if stream is None or not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, ValueError, OSError):
        return None


def _terminal_width(err: bool = False) -> int:
    """The width in cells to fold human output for stdout (or stderr, ``err``) to.

    The terminal's width, less one, when the stream is a terminal. Otherwise (a pipe, a
    file: ``read | less``) the output still reaches a screen later, so it is folded
    to ``$COLUMNS``, else 80, or to the terminal this command runs in if narrower.
    """
    stream = sys.stderr if err else sys.stdout
    columns = _tty_columns(stream)
    if columns is None:
        env = os.environ.get("COLUMNS", "").strip()
        columns = int(env) if env.isdigit() and int(env) > 0 else _DEFAULT_COLUMNS
        others = (_tty_columns(s) for s in (sys.stdout, sys.stderr, sys.stdin))
        columns = min([columns, *(c for c in others if c is not None)])
    return max(_MIN_WIDTH, columns - 1)


def _fold(line: str, width: int) -> list[str]:
    """``line`` as rows of at most ``width`` cells; every row after the first is indented.

    Breaks at the last space that fits, else inside a word; spaces at a break are
    dropped. No row is wider than ``width`` (given room for the indent and one wide
    character), so the terminal never has to wrap a row itself (it would continue at
    column 0). Widths are counted by :func:`~backchannel.safe_text.cell_width`, which
    errs wide.
    """
    if cell_width(line) <= width:
        return [line]
    rows: list[str] = []
    row, used = "", 0
    folded = False  # just broke: spaces are dropped until the next character
    for ch in line:
        w = char_width(ch)
        if folded and ch == " ":
            continue
        folded = False
        if used + w <= width or row == INDENT:
            row += ch
            used += w
            continue
        folded = True
        if ch == " ":
            rows.append(row.rstrip())
            row, used = INDENT, len(INDENT)
            continue
        start = len(INDENT) if rows else 0
        cut = row.rfind(" ")
        tail = row[cut + 1 :]
        if cut > start and row[start:cut].strip() and len(INDENT) + cell_width(tail) + w <= width:
            rows.append(row[:cut].rstrip())
            row = INDENT + tail
        else:
            rows.append(row.rstrip())
            row = INDENT
        folded = False
        row += ch
        used = cell_width(row)
    if row.strip() or not rows:  # not a row of the spaces a break left over
        rows.append(row)
    return rows


def _fold_text(text: str, width: int) -> str:
    """Every line of ``text`` folded to ``width`` (:func:`_fold`)."""
    return "\n".join(row for line in text.split("\n") for row in _fold(line, width))


def _echo(text: str, *, err: bool = False) -> None:
    """Print human output (already cleaned), every line folded to the stream's width.

    Each line of ``text`` must start with this program's own words or be indented;
    what others wrote (names, titles, texts) then never starts a row on screen.
    """
    click.echo(_fold_text(text, _terminal_width(err)), err=err)


def _block(head: str, body: Sequence[str] = (), width: int | None = None) -> str:
    """A header line, then ``body``'s lines indented under it, all folded to ``width``.

    Args:
        head: the header, already cleaned; the first body line follows it.
        body: the message's lines, already cleaned (:func:`clean_lines`).
        width: the width in cells; None: stdout's (:func:`_terminal_width`).
    """
    lines = [head + (body[0] if body else "")]
    lines += [INDENT + line if line else "" for line in body[1:]]
    if width is None:
        width = _terminal_width()
    return "\n".join(row for line in lines for row in _fold(line, width))


def _message_line(m: MessageView, width: int | None = None) -> str:
    """A message as people read it: its header, then its further lines indented.

    Folded to ``width`` cells, or (None) to stdout's width (:func:`_terminal_width`).
    """
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
        click.echo(_message_line(m))


#: What happens to a post that was not delivered.
_KEPT = (
    " It stays queued on this device and is offered to the relay again the next time "
    "this profile connects."
)
#: What happens to a post the relay refused for good.
_GONE = " It is no longer queued on this device: post it again if it still matters."


async def _refusals(s: Session, room: str, post: str | None) -> str | None:
    """What the relay refused while this command ran that counts against its post, or None.

    The command's own post (``post``), and any post of the same ``room``: a post the
    client holds after a refusal holds back the posts queued after it in its room
    (the outbox keeps their order). Only asked when the command's own post was not
    acknowledged, so a refusal of another post never turns a delivered one into a
    failure.

    Returns:
        The client's sentences for those refusals, and whether what was refused is
        still queued on this device.
    """
    refused = [
        e for e in s.seen if isinstance(e, PostRefused) and (e.post == post or e.room == room)
    ]
    if not refused:
        return None
    kept = [await s.client.post_queued(e.post) for e in refused]
    text = " ".join(dict.fromkeys(clean(e.text) for e in refused))
    return text + (_KEPT if any(kept) else _GONE)


@dataclasses.dataclass(frozen=True)
class Posted:
    """What became of what a command posted (a message, an edit, a reaction...)."""

    #: The message as stored after the command, if the command posted one.
    message: MessageView | None = None
    #: Why it is not delivered (a sentence), or None: the relay acknowledged it.
    problem: str | None = None
    #: The relay refused it (else it is only still queued).
    refused: bool = False


async def _posted(s: Session, posted: MessageView | QueuedPost) -> Posted:
    """Sync, then say whether the relay acknowledged a post, refused it, or it is still queued.

    Args:
        s: the session that posted.
        posted: what the client returned when it queued the post: the message, or (an
            edit, a deletion, a reaction, a leave) the queued post. Each is judged by
            the relay's acknowledgement of that very post.
    """
    s.settled = True
    m = posted if isinstance(posted, MessageView) else None
    try:
        await s.sync()
    except BackchannelError as exc:
        return Posted(m, f"Not delivered yet: {clean(exc.user_message())}{_KEPT}")
    await asyncio.sleep(0)  # let the collector take the last events
    if isinstance(posted, MessageView):
        m = await s.client.message(posted.room, posted.id) or posted
        delivered = m.delivered
        refused = await _refusals(s, posted.room, None)
    else:
        delivered = await s.client.post_delivered(posted)
        refused = await _refusals(s, posted.room, posted.post)
    if delivered:
        return Posted(m)
    if refused is not None:
        return Posted(m, refused, refused=True)
    return Posted(m, "Not delivered yet: the relay has not acknowledged it." + _KEPT)


def _report_post(opts: Options, posted: Posted, data: dict[str, Any], human: str) -> None:
    """Say what became of a post: success (exit 0), refused (1) or still queued (2).

    A message still queued is printed all the same (its id is needed to refer to it,
    and ``--json`` says ``"delivered": false``), with the reason on stderr.
    """
    if posted.refused:
        raise Failure(posted.problem or "")
    if posted.problem is None or posted.message is not None:
        _emit(opts, data, lambda: human)
    if posted.problem is not None:
        _echo(posted.problem, err=True)
        click.get_current_context().exit(2)


def _report_message(opts: Options, posted: Posted) -> None:
    m = posted.message
    assert m is not None
    _report_post(opts, posted, _message_json(m), _message_line(m))


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
        _echo("No rooms yet. Create one with `backchannel room create TITLE`.")
    else:
        for r in found:
            _echo(_room_line(r))


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
        _echo("No one is waiting.")
    else:
        for r in found:
            _echo(f"{r.id}  {clean(r.name)}  (asked {_when(r.received_at)})")
            _echo(f"{INDENT}safety number: {r.safety_number}")


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
        return await _posted(s, await s.client.send(room_name, text, reply_to=reply_to))

    _report_message(opts, _run(_session(opts, action, writes=True)))


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.argument("text")
@click.pass_obj
def edit(opts: Options, room_name: str, message: str, text: str) -> None:
    """Replace the TEXT of one of your messages in ROOM (everyone sees it was edited)."""

    async def action(s: Session) -> Posted:
        return await _posted(s, await s.client.edit(room_name, message, text))

    posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"id": message, "edited": True}, "Edited.")


@cli.command()
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.pass_obj
def delete(opts: Options, room_name: str, message: str) -> None:
    """Delete one of your messages in ROOM for everyone."""

    async def action(s: Session) -> Posted:
        return await _posted(s, await s.client.delete(room_name, message))

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
        return await _posted(s, await s.client.react(room_name, message, emoji, remove=remove))

    posted = _run(_session(opts, action, writes=True))
    _report_post(opts, posted, {"id": message, "emoji": emoji, "removed": remove}, "Done.")


@cli.command("send-file")
@click.argument("room_name", metavar="ROOM")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def send_file(opts: Options, room_name: str, path: Path) -> None:
    """Send the file at PATH to ROOM."""

    async def action(s: Session) -> Posted:
        return await _posted(s, await s.client.send_file(room_name, path))

    _report_message(opts, _run(_session(opts, action, writes=True)))


@cli.command("save-file")
@click.argument("room_name", metavar="ROOM")
@click.argument("message")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace the file at DEST if there is one.")
@click.pass_obj
def save_file(opts: Options, room_name: str, message: str, dest: Path, overwrite: bool) -> None:
    """Save the file of MESSAGE (its id, from `read`) to DEST (a file or a directory).

    In a directory, the file takes the sender's name, with a `_` before a name that
    starts with a dot (`_.bashrc`). An existing file is never replaced without --overwrite.
    """

    async def action(s: Session) -> Path:
        return await s.client.save_file(room_name, message, dest, overwrite=overwrite)

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
                _echo("You are no longer in this room.", err=True)
                return
            elif isinstance(event, Alert) and event.room in (None, room_id):
                _echo(f"Note: {clean(event.text)}", err=True)

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
            _echo(_member_line(m))


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
        posted = await _posted(s, await s.client.leave(room_name))
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
            raise Failure(
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
