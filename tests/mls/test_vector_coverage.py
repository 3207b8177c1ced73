"""Every entry of the nine part-1 vector files is its own test case, and none is skipped.

The MLS part-1 proof (RFC 9420 test vectors, ``shared/specs/mls-test-vectors.md``)
asks for each entry of tree-math, crypto-basics, secret-tree, key-schedule,
psk_secret, transcript-hashes, message-protection, messages and deserialization to
be a test case of its own: 450 entries in the shared vectors, all seven RFC suites.
This module checks that claim against what the vector test modules really do:

* each module loads its file through :func:`tests.vectors.load_vectors` (which skips
  without vectors, or fails under ``BACKCHANNEL_REQUIRE_VECTORS=1``);
* each of the module's per-entry tests (listed in :data:`PER_ENTRY_TESTS`) is
  parametrised with exactly the file's entries, in file order, once each, with unique
  ids and no marks;
* ``pytest --collect-only``, run on those modules with ``BACKCHANNEL_REQUIRE_VECTORS=1``,
  collects exactly ``entries x other parameter axes`` cases for each of those tests;
* nothing in those modules can skip or xfail a case once the vectors are present;
* every ciphersuite that appears in the files is one this library implements.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import os
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from backchannel.mls.crypto.suites import get_cipher_suite
from tests import vectors
from tests.vectors import load_vectors

ROOT = Path(__file__).resolve().parents[2]

#: Vector file → (test module, the tests in it that must run once per entry).
PER_ENTRY_TESTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tree-math": ("tests.mls.test_treemath", ("test_tree_math_vector",)),
    "crypto-basics": (
        "tests.mls.test_crypto_basics",
        (
            "test_ref_hash",
            "test_expand_with_label",
            "test_derive_secret",
            "test_derive_tree_secret",
            "test_sign_with_label",
            "test_encrypt_with_label",
        ),
    ),
    "secret-tree": ("tests.mls.test_secret_tree", ("test_sender_data", "test_secret_tree")),
    "key-schedule": ("tests.mls.test_key_schedule", ("test_key_schedule",)),
    "psk_secret": ("tests.mls.test_psk_secret", ("test_psk_secret",)),
    "transcript-hashes": ("tests.mls.test_transcript", ("test_transcript_hashes",)),
    "message-protection": (
        "tests.mls.test_message_protection",
        ("test_public_message", "test_private_message"),
    ),
    "messages": ("tests.mls.test_messages", ("test_struct_roundtrip", "test_proposal_roundtrip")),
    "deserialization": (
        "tests.mls.test_deserialization",
        ("test_vlbytes_header", "test_vlbytes_header_with_body"),
    ),
}

#: Entries per file in the official vectors (shared/mls-test-vectors).
EXPECTED_ENTRIES = {
    "tree-math": 10,
    "crypto-basics": 7,
    "secret-tree": 21,
    "key-schedule": 7,
    "psk_secret": 77,
    "transcript-hashes": 7,
    "message-protection": 7,
    "messages": 300,
    "deserialization": 14,
}

FILES = list(PER_ENTRY_TESTS)
SUITE_FILES = [
    "crypto-basics",
    "secret-tree",
    "key-schedule",
    "psk_secret",
    "transcript-hashes",
    "message-protection",
]

# Loading here skips this module when the vectors are absent (or fails it in CI).
ENTRIES: dict[str, list[dict[str, Any]]] = {name: load_vectors(name) for name in FILES}

#: Calls that would skip or expect failure of a collected case.
SKIPPING_NAMES = {"skip", "skipif", "xfail", "importorskip"}


def _parametrize_marks(function: Any) -> list[pytest.Mark]:
    marks: list[pytest.Mark] = getattr(function, "pytestmark", [])
    return [mark for mark in marks if mark.name == "parametrize"]


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0]
    if isinstance(names, str):
        return [n.strip() for n in names.split(",") if n.strip()]
    return list(names)


def _per_entry_mark(function: Any) -> pytest.Mark:
    found = [m for m in _parametrize_marks(function) if _argnames(m) == ["vector"]]
    assert len(found) == 1, f"{function.__name__}: needs one parametrize('vector', ...)"
    return found[0]


def _test_function(file: str, name: str) -> Any:
    module = importlib.import_module(PER_ENTRY_TESTS[file][0])
    function = getattr(module, name, None)
    assert callable(function), f"{module.__name__}.{name} is missing"
    return function


@cache
def _collected() -> Counter[str]:
    """``module path::test`` → number of cases pytest collects, vectors required."""
    paths = sorted({module.replace(".", "/") + ".py" for module, _ in PER_ENTRY_TESTS.values()})
    env = dict(os.environ, BACKCHANNEL_REQUIRE_VECTORS="1")
    folder = vectors.vectors_dir()
    assert folder is not None
    env["BACKCHANNEL_MLS_VECTORS"] = str(folder)
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "-o", "addopts=", *paths],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts: Counter[str] = Counter()
    for line in result.stdout.splitlines():
        if "::" in line:
            counts[line.split("[", 1)[0]] += 1
    assert counts, result.stdout[-2000:]
    return counts


def test_the_shared_vectors_hold_450_entries() -> None:
    assert {name: len(entries) for name, entries in ENTRIES.items()} == EXPECTED_ENTRIES
    assert sum(len(entries) for entries in ENTRIES.values()) == 450


@pytest.mark.parametrize("file", SUITE_FILES)
def test_every_suite_in_the_vectors_is_implemented(file: str) -> None:
    suites = {entry["cipher_suite"] for entry in ENTRIES[file]}
    assert suites == set(range(1, 8))
    for suite in suites:
        assert int(get_cipher_suite(suite).suite) == suite


@pytest.mark.parametrize("file", FILES)
def test_module_loads_its_file_through_load_vectors(file: str) -> None:
    module = importlib.import_module(PER_ENTRY_TESTS[file][0])
    assert getattr(module, "load_vectors", None) is vectors.load_vectors
    tree = ast.parse(inspect.getsource(module))
    loaded = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "load_vectors"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert file in loaded


@pytest.mark.parametrize("file", FILES)
def test_nothing_skips_a_vector_case(file: str) -> None:
    module: ModuleType = importlib.import_module(PER_ENTRY_TESTS[file][0])
    tree = ast.parse(inspect.getsource(module))
    skipping = sorted(
        f"line {node.lineno}: {node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in SKIPPING_NAMES
    )
    assert skipping == []


@pytest.mark.parametrize(
    ("file", "test"),
    [(file, test) for file, (_, tests) in PER_ENTRY_TESTS.items() for test in tests],
)
def test_each_entry_is_its_own_case(file: str, test: str) -> None:
    function = _test_function(file, test)
    params = _per_entry_mark(function).args[1]
    values = []
    ids = []
    for param in params:
        if hasattr(param, "values"):  # pytest.param(...)
            assert not param.marks, f"{test}: a vector case carries marks {param.marks}"
            values.append(param.values[0])
            ids.append(param.id)
        else:
            values.append(param)
    # Exactly the file's entries, in order: none missing, none twice, none extra.
    assert values == ENTRIES[file]
    if ids:
        assert None not in ids and len(set(ids)) == len(ids), f"{test}: ids are not unique"

    other_axes = [
        len(m.args[1]) for m in _parametrize_marks(function) if _argnames(m) != ["vector"]
    ]
    expected = len(ENTRIES[file]) * math.prod(other_axes)
    path = PER_ENTRY_TESTS[file][0].replace(".", "/") + ".py"
    assert _collected()[f"{path}::{test}"] == expected
