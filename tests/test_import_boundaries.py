"""The layering rules of design.md, checked on what a fresh interpreter really imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def imported_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("module", ["relay", "relay.app", "relay.protocol", "relay.store.sqlite"])
def test_the_relay_is_blind(module: str) -> None:
    assert "backchannel" not in top_level(imported_after(module))


def test_importing_backchannel_pulls_in_no_framework() -> None:
    loaded = top_level(imported_after("backchannel"))
    assert not loaded & {"aiohttp", "textual", "asyncio", "relay", "sqlite3"}


def test_mls_is_sans_io() -> None:
    loaded = imported_after("backchannel.mls")
    forbidden = {"asyncio", "aiohttp", "sqlite3", "socket", "relay", "textual"}
    assert not top_level(loaded) & forbidden
    assert not {
        m for m in loaded if m.startswith("backchannel.") and not m.startswith("backchannel.mls")
    }


def test_the_app_opens_before_the_engine_and_the_network_load() -> None:
    """What the terminal app imports before it asks for the passphrase.

    The first screen is painted from the store (``stored_views``); the room engine
    (MLS) loads after it (``Client.load``) and the network stack (aiohttp, the
    embedded relay) after that (``Client.connect``): imported up front they were most
    of a second of start-up.
    """
    loaded = imported_after("backchannel.cli, backchannel.tui, backchannel.tui.screens.main")
    assert not top_level(loaded) & {"aiohttp", "aiohttp_socks"}
    early = {
        "backchannel.engine",
        "backchannel.identity",
        "backchannel.mls.group",
        "backchannel.rooms",
        "backchannel.embedded",
        "backchannel.transport.session",
        "relay.app",
    }
    assert not early & loaded
    assert "backchannel.client" in loaded
