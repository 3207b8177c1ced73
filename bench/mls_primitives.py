"""MLS primitive costs per ciphersuite, against the raw AEAD of the same 1 KiB as the floor.

For ciphersuites 1 (X25519, AES-128-GCM, Ed25519), 3 (X25519, ChaCha20-Poly1305,
Ed25519) and the default hybrid suite 0xF001 (X-Wing ML-KEM-768+X25519, AES-128-GCM,
Ed25519), one run measures, each operation timed on its own with
``time.perf_counter_ns`` (garbage collector off, after a warm-up) and reported as the
median:

* **send**: sign a 1 KiB application message from a member (FramedContentTBS, §6.1),
  protect it as a PrivateMessage (next ratchet key, reuse guard, content and sender-data
  AEAD, §6.3) and encode the MLSMessage;
* **protect**: the PrivateMessage protection alone (no signature, no encoding);
* **receive**: decode the MLSMessage and unprotect it (sender data, ratchet key,
  content AEAD, signature check, key deletion). Messages are received in the order sent,
  by a second member with its own secret tree;
* **key schedule**: one epoch of ``EpochSecrets.derive`` (joiner, member, epoch secret
  and its eleven derived secrets, §8), chained from the previous epoch's init secret;
* **HPKE seal / open**: single-shot base mode of a 32-byte secret (a path secret's
  size) to a fresh key pair of the suite's KEM, empty AAD, as EncryptWithLabel uses it;
* **AEAD floor**: ``cryptography``'s raw AESGCM / ChaCha20Poly1305 seal and then open of
  the same 1 KiB under a fixed key and nonce: the least any PrivateMessage can cost.

Ratios: send+receive and protect against the AEAD floor of the same suite, and the key
schedule and HPKE of every suite against suite 1 of the same run.

Usage::

    .venv/bin/python bench/mls_primitives.py            # about a minute
    .venv/bin/python bench/mls_primitives.py --quick    # under 30 s

The last line of stdout is one JSON object holding every figure (nanoseconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cryptography
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from backchannel.mls.crypto.hpke import AeadId, HPKEPrivateKey
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import DEFAULT_CIPHER_SUITE, CipherSuite, get_cipher_suite
from backchannel.mls.framing import FramedContent, MLSMessage, PrivateMessage, Sender, WireFormat
from backchannel.mls.key_schedule import EpochSecrets
from backchannel.mls.messages import GroupContext
from backchannel.mls.protection import (
    authenticate,
    protect_private_message,
    unprotect_private_message,
)
from backchannel.mls.secret_tree import SecretTree

SUITES = [
    CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    CipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    DEFAULT_CIPHER_SUITE,
]
MESSAGE = bytes(range(256)) * 4  # 1 KiB of application data
PATH_SECRET = bytes(range(32))
N_LEAVES = 8
SENDER, RECEIVER = 3, 5


@dataclass(frozen=True)
class Counts:
    """How many timed operations of each kind (after as many warm-up ones, capped)."""

    messages: int
    key_schedule: int
    hpke: int
    aead: int


FULL = Counts(messages=20_000, key_schedule=20_000, hpke=3_000, aead=50_000)
QUICK = Counts(messages=2_000, key_schedule=2_000, hpke=300, aead=5_000)


def timed(fn: Callable[[], object], n: int, warmup: int) -> list[int]:
    """Run ``fn`` ``warmup`` times, then ``n`` times, timing each call (ns)."""
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            start = clock()
            fn()
            samples.append(clock() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def summary(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ns": float(statistics.median(ordered)),
        "p10_ns": float(ordered[len(ordered) // 10]),
        "p90_ns": float(ordered[len(ordered) * 9 // 10]),
        "n": float(len(ordered)),
    }


def bench_suite(suite: CipherSuite, counts: Counts) -> dict[str, dict[str, float]]:
    cs = get_cipher_suite(suite)
    group_id = b"bench-room"
    context = GroupContext(1, suite, group_id, 1, cs.hash(b"tree"), cs.hash(b"transcript"), ())
    secrets = EpochSecrets.derive(
        cs, cs.hash(b"init"), cs.hash(b"commit"), None, context.to_bytes()
    )
    signer = SignaturePrivateKey.generate(cs.signature_scheme)
    verifier = signer.public_key()
    framed = FramedContent(group_id, context.epoch, Sender.member(SENDER), b"", MESSAGE)
    results: dict[str, dict[str, float]] = {}

    # send: sign + protect + encode; receive: decode + unprotect, in order, same messages.
    warm = min(counts.messages // 10, 500)
    total = counts.messages + warm
    sender_tree = SecretTree(cs, secrets.encryption_secret, N_LEAVES)
    receiver_tree = SecretTree(cs, secrets.encryption_secret, N_LEAVES)
    wire: list[bytes] = []

    def send() -> None:
        content = authenticate(cs, signer, WireFormat.PRIVATE_MESSAGE, framed, context)
        message = protect_private_message(cs, content, sender_tree, secrets.sender_data_secret)
        wire.append(MLSMessage(message).to_bytes())

    results["send"] = summary(timed(send, counts.messages, warm))
    assert len(wire) == total
    queue = iter(wire)

    def keys(leaf: int) -> Any:
        assert leaf == SENDER
        return verifier

    def receive() -> None:
        body = MLSMessage.from_bytes(next(queue)).body
        assert isinstance(body, PrivateMessage)
        out = unprotect_private_message(
            cs, body, context, receiver_tree, secrets.sender_data_secret, keys
        )
        assert out.content.content == MESSAGE

    results["receive"] = summary(timed(receive, counts.messages, warm))

    # protect alone, on already signed content, with a fresh sending tree.
    content = authenticate(cs, signer, WireFormat.PRIVATE_MESSAGE, framed, context)
    protect_tree = SecretTree(cs, secrets.encryption_secret, N_LEAVES)
    results["protect"] = summary(
        timed(
            lambda: protect_private_message(cs, content, protect_tree, secrets.sender_data_secret),
            counts.messages,
            warm,
        )
    )

    # key schedule: one epoch at a time, each from the previous one's init secret.
    state = {"init": cs.hash(b"init")}
    encoded_context = context.to_bytes()
    commit_secret = cs.hash(b"commit")

    def epoch() -> None:
        derived = EpochSecrets.derive(cs, state["init"], commit_secret, None, encoded_context)
        state["init"] = derived.init_secret

    results["key_schedule"] = summary(
        timed(epoch, counts.key_schedule, min(counts.key_schedule // 10, 500))
    )

    # HPKE single-shot base mode, as EncryptWithLabel calls it (empty AAD).
    recipient = HPKEPrivateKey.generate(cs.kem_id)
    public = recipient.public_key()
    sealed: list[tuple[bytes, bytes]] = []
    hpke_warm = min(counts.hpke // 10, 50)
    results["hpke_seal"] = summary(
        timed(
            lambda: sealed.append(cs.hpke.seal(public, b"info", b"", PATH_SECRET)),
            counts.hpke,
            hpke_warm,
        )
    )
    opened = iter(sealed)

    def hpke_open() -> None:
        enc, ct = next(opened)
        assert cs.hpke.open(recipient, enc, b"info", b"", ct) == PATH_SECRET

    results["hpke_open"] = summary(timed(hpke_open, counts.hpke, hpke_warm))

    # The floor: the suite's raw AEAD, seal then open of the same 1 KiB.
    key = bytes(range(cs.n_k))
    nonce = bytes(cs.n_n)
    aead = ChaCha20Poly1305(key) if cs.aead_id is AeadId.CHACHA20_POLY1305 else AESGCM(key)

    def seal_open() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, MESSAGE, b"aad"), b"aad")

    results["aead_seal_open"] = summary(timed(seal_open, counts.aead, min(counts.aead // 10, 1000)))
    return results


def suite_name(suite: CipherSuite) -> str:
    return f"{suite.value:#06x}" if suite.value >= 0xF000 else str(suite.value)


def micros(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under 30 s")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL

    started = time.perf_counter()
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for suite in SUITES:
        print(f"measuring suite {suite_name(suite)} ({suite.name}) ...", file=sys.stderr)
        figures[suite_name(suite)] = bench_suite(suite, counts)
    elapsed = time.perf_counter() - started

    base = figures[suite_name(SUITES[0])]
    ratios: dict[str, dict[str, float]] = {}
    for name, f in figures.items():
        floor = f["aead_seal_open"]["median_ns"]
        ratios[name] = {
            "send_plus_receive_vs_aead": (f["send"]["median_ns"] + f["receive"]["median_ns"])
            / floor,
            "protect_vs_aead_seal_open": f["protect"]["median_ns"] / floor,
            "key_schedule_vs_suite1": f["key_schedule"]["median_ns"]
            / base["key_schedule"]["median_ns"],
            "hpke_seal_vs_suite1": f["hpke_seal"]["median_ns"] / base["hpke_seal"]["median_ns"],
            "hpke_open_vs_suite1": f["hpke_open"]["median_ns"] / base["hpke_open"]["median_ns"],
        }

    names = list(figures)
    print()
    print(
        f"MLS primitives, median per operation ({'--quick' if args.quick else 'full'} run, "
        f"{counts.messages:,} messages, {counts.hpke:,} HPKE ops per suite)"
    )
    print(
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{backend.openssl_version_text()}, {os.cpu_count()} CPUs"
    )
    print()
    rows = [
        ("send: sign + protect + encode (1 KiB)", "send"),
        ("receive: decode + unprotect (1 KiB)", "receive"),
        ("protect only (1 KiB)", "protect"),
        ("key schedule, per epoch", "key_schedule"),
        ("HPKE seal (32 B)", "hpke_seal"),
        ("HPKE open (32 B)", "hpke_open"),
        ("floor: raw AEAD seal+open (1 KiB)", "aead_seal_open"),
    ]
    header = f"{'suite':<40}" + "".join(f"{n:>14}" for n in names)
    print(header)
    print("-" * len(header))
    for label, key in rows:
        print(
            f"{label:<40}" + "".join(f"{micros(figures[n][key]['median_ns']):>14}" for n in names)
        )
    print()
    ratio_rows = [
        ("(send + receive) / AEAD floor", "send_plus_receive_vs_aead"),
        ("protect / AEAD floor", "protect_vs_aead_seal_open"),
        ("key schedule / suite 1", "key_schedule_vs_suite1"),
        ("HPKE seal / suite 1", "hpke_seal_vs_suite1"),
        ("HPKE open / suite 1", "hpke_open_vs_suite1"),
    ]
    for label, key in ratio_rows:
        print(f"{label:<40}" + "".join(f"{ratios[n][key]:>13.1f}x" for n in names))
    print()
    print(f"({elapsed:.1f} s in all)")
    print(
        json.dumps(
            {
                "benchmark": "mls_primitives",
                "quick": args.quick,
                "message_bytes": len(MESSAGE),
                "counts": counts.__dict__,
                "python": platform.python_version(),
                "cryptography": cryptography.__version__,
                "openssl": backend.openssl_version_text(),
                "cpus": os.cpu_count(),
                "elapsed_s": round(elapsed, 2),
                "suites": {n: {"name": CipherSuite(int(n, 0)).name} for n in names},
                "figures": figures,
                "ratios": ratios,
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
