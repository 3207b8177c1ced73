"""The installed ``backchannel`` app in a real terminal (tmux): type a message, a peer reads it.

A relay runs as a process, two profiles are made with the CLI (Ada facilitates a room,
Ben joins it), then Ada's app starts in a detached tmux session of 120x40. Keys go in
with ``tmux send-keys`` and the screen comes back with ``tmux capture-pane``. The app
holds Ada's profile open (one process per profile), so Ben's CLI checks the delivery.
The test skips where tmux or the installed command is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.relayproc import RelayProcess

PASSPHRASE = "correct horse battery staple"
MESSAGE = "hello from a real terminal"
SESSION = "smoke"


def _backchannel() -> str | None:
    """The installed console script next to this interpreter (else on PATH)."""
    beside = Path(sys.executable).parent / "backchannel"
    return str(beside) if beside.exists() else shutil.which("backchannel")


TMUX = shutil.which("tmux")
BACKCHANNEL = _backchannel()

pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)"),
    pytest.mark.skipif(BACKCHANNEL is None, reason="the backchannel command is not installed"),
]


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"BACKCHANNEL_HOME", "BACKCHANNEL_PROXY"}
    }
    env["BACKCHANNEL_PASSPHRASE"] = PASSPHRASE
    return env


def _cli(home: Path, *args: str, as_json: bool = False, timeout: float = 60) -> str:
    """Run the installed CLI on ``home`` and return its standard output."""
    assert BACKCHANNEL is not None
    command = [BACKCHANNEL, "--home", str(home), *(["--json"] if as_json else []), *args]
    done = subprocess.run(
        command, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def _spawn(home: Path, *args: str) -> subprocess.Popen[str]:
    """Start the CLI on ``home`` without waiting (see :func:`_finish`)."""
    assert BACKCHANNEL is not None
    return subprocess.Popen(
        [BACKCHANNEL, "--home", str(home), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], what: str) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, f"{what} failed: {err.strip()}"
    return out


def _poll(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Tmux:
    """One detached tmux server on a private socket, so no one else's sessions are touched."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr.strip()}"
        return done.stdout

    def screen(self) -> str:
        """The visible pane as text."""
        return self.run("capture-pane", "-p", "-t", SESSION)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """Wait until ``text`` shows in the pane; the pane on failure helps to see why."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never showed; the pane:\n{screen}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert TMUX is not None
        subprocess.run(
            [TMUX, "-S", str(self.socket), "kill-server"], capture_output=True, timeout=20
        )


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "relay-data")
    try:
        asyncio.run(process.wait_ready())
        yield process
    finally:
        process.stop()


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path / "tmux.sock")
    yield server
    server.kill()


class TestTerminalApp:
    """The whole app through a terminal: start, open the room, send, read back elsewhere."""

    def test_message_typed_in_tmux_reaches_the_peer(
        self, tmp_path: Path, relay: RelayProcess, tmux: Tmux
    ) -> None:
        ada, ben = tmp_path / "ada", tmp_path / "ben"
        # Each CLI run pays the interpreter start and the key derivation: overlap what can.
        ben_init = _spawn(ben, "init", "--name", "Ben", "--relay", relay.url)
        _cli(ada, "init", "--name", "Ada", "--relay", relay.url)
        made = _cli(ada, "room", "create", "Water talks", "--approval", "auto", as_json=True)
        room = json.loads(made)["room"]
        link = json.loads(_cli(ada, "room", "invite", room, as_json=True))["link"]
        _finish(ben_init, "Ben's init")
        _cli(ben, "join", link)  # Ada's app admits Ben once it is online (auto approval)

        assert BACKCHANNEL is not None
        command = " ".join(
            [
                "env",
                # Under pytest the session's environment carries COLUMNS=80/LINES=24, which
                # would pin the app at 80x24 whatever the pane's size.
                "-u",
                "COLUMNS",
                "-u",
                "LINES",
                f"BACKCHANNEL_PASSPHRASE={shlex.quote(PASSPHRASE)}",
                shlex.quote(BACKCHANNEL),
                "--home",
                shlex.quote(str(ada)),
            ]
        )
        tmux.run(
            "-f", os.devnull, "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command
        )
        # A detached session may still get tmux's default size: insist on 120x40.
        tmux.run("resize-window", "-t", SESSION, "-x", "120", "-y", "40")
        tmux.wait_for("● connected", timeout=60)
        screen = tmux.wait_for("2 members, you are facilitator", timeout=60)
        assert "Water talks" in screen
        _cli(ben, "sync")  # Ben takes the Welcome

        tmux.run("send-keys", "-t", SESSION, "-l", MESSAGE)
        tmux.wait_for(MESSAGE)  # in the composer
        tmux.run("send-keys", "-t", SESSION, "Enter")

        def sent() -> bool:
            screen = tmux.screen()
            # in the conversation (under Ada's name), and the composer is empty again
            return MESSAGE in screen and "Enter sends" in screen

        _poll(sent, 30, "the message in the conversation")

        def ben_has_it() -> bool:
            lines = _cli(ben, "read", room, as_json=True).splitlines()
            messages = [json.loads(line) for line in lines if line.strip()]
            return any(m["text"] == MESSAGE and m["sender_name"] == "Ada" for m in messages)

        _poll(ben_has_it, 60, "Ben to read Ada's message")

        tmux.run("send-keys", "-t", SESSION, "C-q")

        def closed() -> bool:
            done = subprocess.run(
                [TMUX or "tmux", "-S", str(tmux.socket), "has-session", "-t", SESSION],
                capture_output=True,
                timeout=20,
                check=False,
            )
            return done.returncode != 0

        _poll(closed, 30, "the app to quit on ctrl+q")
