"""Every entry of the sixteen vector files is its own test case, and none is skipped.

The MLS proofs (RFC 9420 test vectors, ``shared/specs/mls-test-vectors.md``) ask for
each entry of the vector files to be a test case of its own, all seven RFC suites:

* part 1, nine files, 450 entries: tree-math, crypto-basics, secret-tree,
  key-schedule, psk_secret, transcript-hashes, message-protection, messages and
  deserialization;
* part 2, seven files, 335 entries: tree-operations, tree-validation, treekem,
  welcome, passive-client-welcome, passive-client-handling-commit and
  passive-client-random;

785 entries in all. This module checks that claim against what the vector test
modules really do:

* each module loads its file through :func:`tests.vectors.load_vectors` (which skips
  without vectors, or fails under ``BACKCHANNEL_REQUIRE_VECTORS=1``), directly or
  through a module-level helper that passes its argument on to ``load_vectors``;
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
    # Part 2.
    "tree-operations": ("tests.mls.test_tree_operations", ("test_tree_operations_vector",)),
    "tree-validation": ("tests.mls.test_tree_validation", ("test_tree_validation_vector",)),
    "treekem": ("tests.mls.test_treekem", ("test_treekem_vector",)),
    "welcome": ("tests.mls.test_welcome", ("test_welcome_vector",)),
    "passive-client-welcome": ("tests.mls.test_passive_client", ("test_passive_client_welcome",)),
    "passive-client-handling-commit": (
        "tests.mls.test_passive_client",
        ("test_passive_client_handling_commit",),
    ),
    "passive-client-random": ("tests.mls.test_passive_client", ("test_passive_client_random",)),
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
    "tree-operations": 5,
    "tree-validation": 98,
    "treekem": 77,
    "welcome": 7,
    "passive-client-welcome": 56,
    "passive-client-handling-commit": 91,
    "passive-client-random": 1,
}

FILES = list(PER_ENTRY_TESTS)
PART_1 = FILES[:9]
PART_2 = FILES[9:]
#: Files with entries for each of the seven RFC suites.
SUITE_FILES = [
    "crypto-basics",
    "secret-tree",
    "key-schedule",
    "psk_secret",
    "transcript-hashes",
    "message-protection",
    "tree-validation",
    "treekem",
    "welcome",
    "passive-client-welcome",
    "passive-client-handling-commit",
]
#: Files whose entries are all for suite 1 (as published).
SUITE_1_FILES = ["tree-operations", "passive-client-random"]

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


def test_the_shared_vectors_hold_450_entries_in_part_1() -> None:
    assert {name: len(ENTRIES[name]) for name in PART_1} == {
        name: EXPECTED_ENTRIES[name] for name in PART_1
    }
    assert sum(len(ENTRIES[name]) for name in PART_1) == 450


def test_the_shared_vectors_hold_335_entries_in_part_2() -> None:
    assert PART_2 == [
        "tree-operations",
        "tree-validation",
        "treekem",
        "welcome",
        "passive-client-welcome",
        "passive-client-handling-commit",
        "passive-client-random",
    ]
    assert {name: len(ENTRIES[name]) for name in PART_2} == {
        name: EXPECTED_ENTRIES[name] for name in PART_2
    }
    assert sum(len(ENTRIES[name]) for name in PART_2) == 335


def test_the_grand_total_is_785_entries_over_all_seven_suites() -> None:
    assert {name: len(entries) for name, entries in ENTRIES.items()} == EXPECTED_ENTRIES
    assert sum(len(entries) for entries in ENTRIES.values()) == 785
    # Both parts, all seven RFC suites (tree-math, messages and deserialization name none).
    for part in (PART_1, PART_2):
        suites = {
            entry["cipher_suite"]
            for name in part
            for entry in ENTRIES[name]
            if "cipher_suite" in entry
        }
        assert suites == set(range(1, 8))


@pytest.mark.parametrize("file", SUITE_FILES)
def test_every_suite_in_the_vectors_is_implemented(file: str) -> None:
    suites = {entry["cipher_suite"] for entry in ENTRIES[file]}
    assert suites == set(range(1, 8))
    for suite in suites:
        assert int(get_cipher_suite(suite).suite) == suite


@pytest.mark.parametrize("file", SUITE_1_FILES)
def test_suite_1_only_files_are_suite_1(file: str) -> None:
    assert {entry["cipher_suite"] for entry in ENTRIES[file]} == {1}


def _string_args(call: ast.Call) -> set[str]:
    first = call.args[0] if call.args else None
    return (
        {first.value} if isinstance(first, ast.Constant) and isinstance(first.value, str) else set()
    )


def _files_loaded(tree: ast.Module) -> set[str]:
    """Vector names a module loads: ``load_vectors("x")``, or ``helper("x")`` where a
    module-level ``def helper(name)`` calls ``load_vectors(name)``."""
    helpers = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.args.args:
            first = node.args.args[0].arg
            if any(
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "load_vectors"
                and call.args
                and isinstance(call.args[0], ast.Name)
                and call.args[0].id == first
                for call in ast.walk(node)
            ):
                helpers.add(node.name)
    loaders = {"load_vectors"} | helpers
    return {
        name
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in loaders
        for name in _string_args(call)
    }


@pytest.mark.parametrize("file", FILES)
def test_module_loads_its_file_through_load_vectors(file: str) -> None:
    module = importlib.import_module(PER_ENTRY_TESTS[file][0])
    assert getattr(module, "load_vectors", None) is vectors.load_vectors
    assert file in _files_loaded(ast.parse(inspect.getsource(module)))


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
