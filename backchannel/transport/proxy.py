"""SOCKS5 proxy support (e.g. Tor) for the relay connection, built on ``aiohttp-socks``.

Two URL schemes, with curl's meaning:

* ``socks5h://host:port`` — the proxy resolves the relay's host name (remote DNS).
  This is the one to use with Tor: the name never reaches a local resolver.
* ``socks5://host:port`` — the relay's host name is resolved locally and the proxy
  is given an IP address.

An optional ``user:password@`` is passed to the proxy (Tor uses it to isolate
circuits). It never appears in a repr or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .errors import InvalidProxyURL

if TYPE_CHECKING:
    import aiohttp

# aiohttp-socks (and aiohttp under it) load only when a connection is made: parsing
# and checking a proxy URL happens as the app opens, connecting after its first paint.

__all__ = ["ProxySettings", "parse_proxy_url", "proxy_errors"]


def proxy_errors() -> tuple[type[Exception], ...]:
    """What a connection through the proxy raises when the proxy fails or refuses.

    aiohttp does not wrap these in its own ``ClientError``.
    """
    from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

    return (ProxyConnectionError, ProxyError, ProxyTimeoutError)


_SCHEMES = {"socks5": False, "socks5h": True}
_SHAPE = "Use socks5h://host:port (the proxy resolves names, right for Tor) or socks5://host:port."


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """A validated SOCKS5 proxy address."""

    #: The proxy's host name or IP address.
    host: str
    #: The proxy's TCP port.
    port: int
    #: True for ``socks5h``: the relay's host name is sent to the proxy unresolved.
    remote_dns: bool
    #: Optional SOCKS5 user name (Tor: circuit isolation); never shown.
    username: str | None = field(default=None, repr=False)
    #: Optional SOCKS5 password; never shown.
    password: str | None = field(default=None, repr=False)

    def connector(self, **kwargs: Any) -> aiohttp.BaseConnector:
        """A new aiohttp connector that opens every connection through this proxy.

        With ``remote_dns`` the connector resolves nothing locally: aiohttp's resolver
        is replaced by a pass-through and the host name goes to the proxy as is.

        Args:
            **kwargs: further ``aiohttp.TCPConnector`` arguments.

        Returns:
            The connector; give it to an ``aiohttp.ClientSession``, which will close it.
        """
        from aiohttp_socks import ProxyConnector, ProxyType

        return ProxyConnector(
            host=self.host,
            port=self.port,
            proxy_type=ProxyType.SOCKS5,
            username=self.username,
            password=self.password,
            rdns=self.remote_dns,
            **kwargs,
        )


def parse_proxy_url(url: str) -> ProxySettings:
    """Validate a ``--proxy`` URL.

    Args:
        url: ``socks5://[user:pass@]host:port`` or ``socks5h://[user:pass@]host:port``.

    Returns:
        The parsed settings.

    Raises:
        InvalidProxyURL: the URL has another scheme, no host, no or a bad port, or a
            path or query. The message names the problem, never the credentials.
    """
    if not isinstance(url, str):
        raise InvalidProxyURL(f"The proxy must be given as a URL string. {_SHAPE}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise InvalidProxyURL(
            f"The proxy URL's port is not a number from 1 to 65535. {_SHAPE}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = scheme if scheme.isascii() and scheme.isalnum() and len(scheme) <= 10 else "?"
        raise InvalidProxyURL(
            f"Only SOCKS5 proxies are supported, not {shown or 'a URL without scheme'}. {_SHAPE}"
        )
    host = parts.hostname
    if not host:
        raise InvalidProxyURL(f"The proxy URL has no host. {_SHAPE}")
    if port is None or port == 0:
        raise InvalidProxyURL(f"The proxy URL needs a port (Tor's is usually 9050). {_SHAPE}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxyURL(f"A proxy URL has only a host and a port. {_SHAPE}")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if not username or not password:
        if username or password:  # SOCKS5 (RFC 1929) sends both or neither
            raise InvalidProxyURL(
                f"Give the proxy both a user name and a password, or neither. {_SHAPE}"
            )
        username = password = None
    return ProxySettings(host, port, _SCHEMES[scheme], username, password)
