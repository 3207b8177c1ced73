"""The atheris harnesses in ``fuzz/`` run clean for a short while in plain mode (CI smoke).

Each harness is imported and its plain mutation loop run in-process for ~1.5 s with a
fixed seed (repeatable); one harness is also run as a script, as a person would.
Long campaigns: see ``fuzz/README.md``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = [
    "fuzz_mls_message",
    "fuzz_relay_frame",
    "fuzz_server_frame",
    "fuzz_invite",
    "fuzz_content",
]


@pytest.fixture(scope="module", autouse=True)
def _fuzz_on_path() -> object:
    sys.path.insert(0, str(FUZZ_DIR))
    yield
    sys.path.remove(str(FUZZ_DIR))


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_runs_clean_in_plain_mode(name: str, tmp_path: Path) -> None:
    harness = importlib.import_module(name)
    common = importlib.import_module("_common")
    seeds = harness.seeds()
    assert seeds, "a harness needs a seed corpus"
    for seed in seeds:  # the seeds are valid inputs
        harness.one_input(seed)
    runs = common.plain_loop(harness.one_input, seeds, 1.5, seed=1234, crash_dir=tmp_path)
    assert runs > len(seeds)


def test_harness_command_line(tmp_path: Path) -> None:
    script = FUZZ_DIR / "fuzz_content.py"
    done = subprocess.run(
        [sys.executable, str(script), "--plain", "1", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no findings" in done.stdout
    seeds = tmp_path / "seeds"
    subprocess.run(
        [sys.executable, str(script), "--write-seeds", str(seeds)],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=True,
    )
    assert len(list(seeds.iterdir())) >= 5


def test_plain_loop_reports_a_finding(tmp_path: Path) -> None:
    common = importlib.import_module("_common")

    def fragile(data: bytes) -> None:
        if data.startswith(b"\xff"):
            raise IndexError("boom")

    with pytest.raises(AssertionError, match="IndexError"):
        common.plain_loop(fragile, [b"\xfe\x00"], 5.0, seed=1, crash_dir=tmp_path)
    assert list(tmp_path.glob("crash-*"))
