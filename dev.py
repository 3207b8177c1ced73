#!/usr/bin/env python3
"""Set up a local virtual environment and run Backchannel or its checks.

Usage:
    python3 dev.py run [ARGS...]   set up, then start the Backchannel app (ARGS go to it;
                                   a relay alone: .venv/bin/backchannel-relay serve)
    python3 dev.py test [ARGS...]  set up, then lint, type-check and run every test
                                   (ARGS go to pytest)

Needs only Python 3.11+. The environment lives in ``.venv`` and is rebuilt
when ``pyproject.toml`` or ``requirements/constraints.txt`` change, so a
fresh clone needs no manual step.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".backchannel-installed"
INPUTS = (ROOT / "pyproject.toml", ROOT / "requirements" / "constraints.txt")

# mypy --strict covers the sans-IO cores and the relay, as design.md asks.
STRICT_PACKAGES = ["relay", "backchannel/mls", "backchannel/rooms"]


def _fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    """Create .venv and install the project with pinned constraints if needed."""
    if sys.version_info < (3, 11):
        sys.exit("Backchannel needs Python 3.11 or newer.")
    wanted = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev.py: installing Backchannel and its pinned dependencies", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraints = str(ROOT / "requirements" / "constraints.txt")
    subprocess.run([*pip, "-c", constraints, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def run(args: list[str]) -> int:
    """Start the Backchannel app (ARGS go to ``backchannel``, e.g. ``--home DIR``).

    To run only a relay: ``.venv/bin/backchannel-relay serve``.
    """
    command = [str(BIN / "backchannel"), *args]
    return subprocess.call(command, cwd=ROOT)


def test(args: list[str]) -> int:
    """Lint, type-check, check import boundaries, then run the whole test suite."""
    steps: list[tuple[str, list[str]]] = [
        ("ruff check", [str(PYTHON), "-m", "ruff", "check", "."]),
        ("ruff format", [str(PYTHON), "-m", "ruff", "format", "--check", "."]),
        ("mypy --strict", [str(PYTHON), "-m", "mypy", "--strict", *STRICT_PACKAGES]),
        ("import contracts", [str(BIN / "lint-imports")]),
    ]
    failed = []
    for name, command in steps:
        print(f"dev.py: {name}", flush=True)
        if subprocess.call(command, cwd=ROOT) != 0:
            failed.append(name)
    print("dev.py: pytest", flush=True)
    code = subprocess.call([str(PYTHON), "-m", "pytest", *args], cwd=ROOT)
    if failed:
        print(f"dev.py: failed: {', '.join(failed)}", flush=True)
        return 1
    return code


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test"}:
        print(__doc__)
        return 2
    ensure_environment()
    action, rest = sys.argv[1], sys.argv[2:]
    return run(rest) if action == "run" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
