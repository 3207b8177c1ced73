"""The shell walkthrough of the CLI (tests/e2e/cli_flow.sh) against a relay process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.relayproc import RelayProcess

SCRIPT = Path(__file__).with_name("cli_flow.sh")


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay")
    try:
        await proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
async def test_cli_flow_script(relay: RelayProcess, tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    assert shutil.which("backchannel", path=bin_dir), "the backchannel command is not installed"
    env = os.environ | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(  # noqa: ASYNC221 - the relay runs in its own process
        ["bash", str(SCRIPT), relay.url, str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.rstrip().endswith("OK")
