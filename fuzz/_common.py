"""Shared runner for the fuzz harnesses: atheris when installed, a plain mutation loop otherwise.

Each harness defines ``seeds()`` (valid encodings) and ``one_input(data: bytes)``, which
returns normally for any input the target handles as documented (accepts it, or raises
its documented error) and raises ``AssertionError`` (or anything else) for a finding.

Command line (see README.md):

    python fuzz/fuzz_x.py -runs=N [corpus_dir ...]    # atheris / libFuzzer flags
    python fuzz/fuzz_x.py --plain SECONDS [--seed N]  # no atheris needed
    python fuzz/fuzz_x.py --write-seeds DIR           # dump the seed corpus
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:  # atheris needs a libFuzzer-enabled wheel; everything below works without it
    import atheris
except ImportError:  # pragma: no cover - depends on the machine
    atheris = None

PLAIN = "--plain" in sys.argv or "--write-seeds" in sys.argv
INTERESTING = [0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC1, 0xCC, 0xDB, 0xDC, 0xFF]


def instrumented() -> contextlib.AbstractContextManager[object]:
    """Wrap the harness's target imports: coverage instrumentation under atheris only."""
    if atheris is not None and not PLAIN:
        return atheris.instrument_imports()  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """1-8 random byte-level mutations (flip, set, cut, insert, delete, splice, dup)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos % len(buf)] = rng.choice(INTERESTING)
        elif op == 2:
            del buf[pos:]
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 5:
            other = rng.choice(seeds)
            buf[pos:] = other[rng.randrange(len(other) + 1) :]
        elif op == 6 and buf:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 32)]
        else:
            buf += rng.randbytes(rng.randint(1, 4))
    return bytes(buf)


def _report(data: bytes, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    print(f"FINDING: input saved to {path}", file=sys.stderr)


def plain_loop(
    one_input: Callable[[bytes], None],
    seeds: Sequence[bytes],
    seconds: float,
    *,
    seed: int | None = None,
    crash_dir: Path | None = None,
) -> int:
    """Mutate ``seeds`` for ``seconds``; returns the number of inputs run.

    Raises:
        AssertionError: an input broke the target's contract (the input is saved
            in ``crash_dir`` and quoted in the message).
    """
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
    pool = [s for s in seeds if s] or [b"\x00"]
    deadline = time.monotonic() + seconds
    runs = 0
    for s in seeds:  # the seeds themselves first
        _run_one(one_input, s, crash_dir)
        runs += 1
    while time.monotonic() < deadline:
        if rng.random() < 0.05:
            data = rng.randbytes(rng.randint(0, 256))
        else:
            data = mutate(rng, rng.choice(pool), pool)
        _run_one(one_input, data, crash_dir)
        runs += 1
        if rng.random() < 0.01 and len(pool) < 256:
            pool.append(data)  # a crude corpus: keep a few mutants as new bases
    return runs


def _run_one(one_input: Callable[[bytes], None], data: bytes, crash_dir: Path | None) -> None:
    try:
        one_input(data)
    except BaseException as exc:
        if crash_dir is not None:
            _report(data, crash_dir)
        raise AssertionError(
            f"{type(exc).__name__} on input {data[:200].hex()}"
            f"{'...' if len(data) > 200 else ''}\n{traceback.format_exc()}"
        ) from exc


def _arg(flag: str) -> str | None:
    if flag in sys.argv:
        i = sys.argv.index(flag)
        if i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return None


def main(one_input: Callable[[bytes], None], seeds: Callable[[], Sequence[bytes]]) -> None:
    """Entry point of each harness script."""
    out = _arg("--write-seeds")
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for s in seeds():
            (folder / hashlib.sha256(s).hexdigest()[:16]).write_bytes(s)
        print(f"wrote {len(seeds())} seeds to {folder}")
        return
    if PLAIN or atheris is None:
        seconds = float(_arg("--plain") or 10)
        seed = _arg("--seed")
        if atheris is None and not PLAIN:
            print("atheris is not installed: running the plain mutation loop", file=sys.stderr)
        runs = plain_loop(
            one_input,
            seeds(),
            seconds,
            seed=int(seed) if seed is not None else None,
            crash_dir=Path.cwd() / "fuzz-findings",
        )
        print(f"plain: {runs} inputs in {seconds:.0f} s, no findings")
        return
    initial = list(seeds())
    state = {"seeded": False}

    def atheris_input(data: bytes) -> None:
        if not state["seeded"]:  # libFuzzer starts from an empty input: try the seeds once
            state["seeded"] = True
            for s in initial:
                one_input(s)
        one_input(data)

    atheris.Setup(sys.argv, atheris_input)
    if os.environ.get("FUZZ_INSTRUMENT_ALL") == "1":
        atheris.instrument_all()  # slower start, also covers third-party code (msgpack glue)
    atheris.Fuzz()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Python warnings the targets may print for hostile inputs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
