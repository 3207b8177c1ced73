"""The relay a profile runs inside the client when it has no relay of its own.

Theory of operation
-------------------
It is the same relay operators run (SQLite, durable), served from this process on the
``HOST:PORT`` the profile was created with (``init --listen``). By default that is
127.0.0.1, reachable from this machine only. A facilitator hosting a workshop LAN
listens on ``0.0.0.0`` (every address of the machine) or on one LAN address, and then
two things matter that do not on loopback:

- **The address in invite links** must be one the others can reach. For a wildcard
  listen it is the address this machine uses towards its default route (asked of the
  kernel at every start; no packet is sent), so it follows the laptop from network to
  network. Listening on a named address advertises that address.
- **Who may write on the facilitator's disk.** The relay admits new mailboxes only
  from connections that present a token (``/v1/ws?admit=TOKEN``). The facilitator's
  own client presents the *owner* token (no quota) and never shows it; invite links
  carry the *guest* token, which lets the people invited open up to
  :data:`GUEST_MAILBOXES` mailboxes (join inboxes, their own rooms and invites) while
  the relay runs. Both tokens are derived from the profile's signature key, so they
  survive restarts and need no storage of their own. Everything else on the relay
  works by per-mailbox capability, as on any relay: a LAN neighbour without a link
  can neither create, read nor write anything. The store is capped at
  :data:`STORE_MAX_BYTES`, and ``/metrics`` is served only on a loopback listener.

The threat model (docs/threat-model.md, adversary L) says what a LAN neighbour can
still do. This module imports the relay's server only when one starts, so reading a
profile's relay address costs no aiohttp import (only ``relay.config``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Final

from relay.config import ADMISSION_PARAM, Admission, Limits, RelayConfig

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ADMISSION_PARAM",
    "GUEST_MAILBOXES",
    "STORE_MAX_BYTES",
    "EmbeddedRelay",
    "advertised_host",
    "free_port",
    "is_loopback",
    "relay_urls",
]

#: Mailboxes the guests of one built-in relay may open in all while it runs.
GUEST_MAILBOXES: Final = 256
#: Blob bytes the built-in relay stores in all (the operator's default is 16 GiB).
STORE_MAX_BYTES: Final = 1 << 30
#: Open connections the built-in relay accepts (a workshop, not a city).
MAX_CONNECTIONS: Final = 512

_WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (recognised, not bound)
# Documentation prefixes (RFC 5737, RFC 3849): connecting a UDP socket only picks the
# route and its source address; nothing is ever sent to them.
_PROBE_V4: Final = ("203.0.113.1", 9)
_PROBE_V6: Final = ("2001:db8::1", 9)
_TOKEN_LABEL: Final = b"backchannel/embedded-relay/v1 admission "


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _route_source(family: socket.AddressFamily, probe: tuple[str, int]) -> str | None:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(probe)
            address = str(s.getsockname()[0])
    except OSError:
        return None
    parsed = ipaddress.ip_address(address)
    if parsed.is_loopback or parsed.is_unspecified or parsed.is_link_local:
        return None
    return address


def _named_address() -> str | None:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    for info in infos:
        address = str(info[4][0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def advertised_host(host: str) -> str:
    """The address invite links carry for a relay listening on ``host``.

    A named address is its own answer. For a wildcard (``0.0.0.0``, ``::``) it is the
    source address of this machine's default route, else an address its host name
    resolves to, else 127.0.0.1 (a machine on no network: only it can reach itself).
    """
    if host not in _WILDCARDS:
        return host
    if host == "::":
        found = _route_source(socket.AF_INET6, _PROBE_V6) or _route_source(
            socket.AF_INET, _PROBE_V4
        )
    else:
        found = _route_source(socket.AF_INET, _PROBE_V4)
    return found or _named_address() or "127.0.0.1"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _token(secret: bytes, who: bytes) -> str:
    mac = hmac.new(secret, _TOKEN_LABEL + who, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode("ascii")


def relay_urls(host: str, port: int, secret: bytes) -> tuple[str, str]:
    """The relay's URL for invite links, and the one this profile's own client uses.

    Args:
        host: the listening address (``--listen``'s host).
        port: the listening port.
        secret: the profile's own secret the admission tokens come from (its
            signature key); never leaves this function.

    Returns:
        ``(link_url, own_url)``: the first, with the guest token, is what others
        reach; the second, with the owner token, reaches the relay from this machine.
    """
    link_host = _url_host(advertised_host(host))
    own_host = "::1" if host == "::" else "127.0.0.1" if host in _WILDCARDS else host
    guest, owner = _token(secret, b"guest"), _token(secret, b"owner")
    return (
        f"ws://{link_host}:{port}/v1/ws?{ADMISSION_PARAM}={guest}",
        f"ws://{_url_host(own_host)}:{port}/v1/ws?{ADMISSION_PARAM}={owner}",
    )


def _admissions(secret: bytes) -> tuple[Admission, ...]:
    return (
        Admission(_token(secret, b"owner"), None),
        Admission(_token(secret, b"guest"), GUEST_MAILBOXES),
    )


class EmbeddedRelay:
    """A full relay (SQLite, durable) served from this process on ``host:port``.

    It is the same relay operators run, so a workshop facilitator can host the room
    for a LAN (``--listen 0.0.0.0:8765``) and later move to a dedicated relay. It
    admits new mailboxes only from holders of the tokens :func:`relay_urls` puts in
    its URLs, and serves ``/metrics`` only when it listens on loopback.
    """

    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", port: int = 8765, *, secret: bytes
    ) -> None:
        self.config = RelayConfig(
            host=host,
            port=port,
            data_dir=data_dir,
            metrics=is_loopback(host),
            admission=_admissions(secret),
            limits=Limits(store_max_bytes=STORE_MAX_BYTES, max_connections=MAX_CONNECTIONS),
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        from relay.app import create_app

        runner = web.AppRunner(create_app(self.config), access_log=None, shutdown_timeout=5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.host, self.config.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
