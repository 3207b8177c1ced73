"""InviteRecord admission (sans-IO): uses counted at commit, Adds in flight, parked requests.

Issue #16, items 4 and 11: a use counted before the Add was built let garbage key packages
use up a link; one link could park 4,096 requests.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from backchannel.rooms.errors import InviteExhausted, InviteRevoked
from backchannel.rooms.invites import MAX_PENDING_REQUESTS, InviteRecord, JoinRequest

NOW = 1_900_000_000
SECRET = b"s" * 32
REQUEST = JoinRequest(b"R" * 16, NOW * 1000, b"key package", "Ben", b"i" * 16, b"w" * 32)


def record(**kw: object) -> InviteRecord:
    return InviteRecord(SECRET, NOW + 3600, **kw)  # type: ignore[arg-type]


def test_uses_counted_outside_the_record_exhaust_it() -> None:
    r = record(max_uses=2)
    r.admit(used=1)
    with pytest.raises(InviteExhausted):
        r.admit(used=2)
    with pytest.raises(InviteExhausted):
        r.admit(used=1, reserved=1)  # one Add in flight takes the last use
    with pytest.raises(InviteExhausted):
        r.screen(REQUEST, now=NOW, used=2)
    r.screen(REQUEST, now=NOW, used=1)  # a request may still wait for the last use


def test_admit_checks_without_counting() -> None:
    r = record()
    r.admit()
    r.admit()  # nothing was counted: a refused Add uses nothing
    assert r.uses == 0
    with pytest.raises(InviteRevoked):
        r.revoke().admit()


def test_pending_requests_per_invite_are_capped() -> None:
    r = record(max_uses=1000)
    r.screen(REQUEST, now=NOW, pending=MAX_PENDING_REQUESTS - 1)
    with pytest.raises(InviteExhausted, match="waiting"):
        r.screen(REQUEST, now=NOW, pending=MAX_PENDING_REQUESTS)
    second = replace(REQUEST, request_id=b"S" * 16, key_package=b"other")
    with pytest.raises(InviteExhausted):
        r.screen(second, now=NOW, pending=MAX_PENDING_REQUESTS)
