"""Load the official MLS interop test vectors (shared/mls-test-vectors).

Vectors are read from ``$BACKCHANNEL_MLS_VECTORS`` if set, else from
``../shared/mls-test-vectors`` beside the project root; they are never copied into
the repository. Where neither exists the calling test skips, unless
``BACKCHANNEL_REQUIRE_VECTORS=1`` (CI), where it fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def vectors_dir() -> Path | None:
    """The folder holding the vector JSON files, or None if there is none."""
    configured = os.environ.get("BACKCHANNEL_MLS_VECTORS")
    candidates = [Path(configured)] if configured else []
    candidates.append(ROOT.parent / "shared" / "mls-test-vectors")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Return the vectors of ``name`` (e.g. ``"key-schedule"``), or skip/fail the test.

    Call it at collection time to parametrise (``pytest.param(..., id=...)``) or
    inside a test.
    """
    folder = vectors_dir()
    path = folder / f"{name}.json" if folder else None
    if path is None or not path.is_file():
        reason = (
            f"MLS test vectors '{name}.json' not found: set BACKCHANNEL_MLS_VECTORS to the "
            "folder holding the IETF mls-implementations test-vectors, or place it at "
            "../shared/mls-test-vectors beside the project"
        )
        if os.environ.get("BACKCHANNEL_REQUIRE_VECTORS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data
