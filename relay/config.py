"""Relay settings: frozen dataclasses loaded from defaults, a TOML file, the environment and flags.

Precedence, lowest first: built-in defaults, the ``--config`` TOML file, environment
variables ``BACKCHANNEL_RELAY_<FIELD>``, command-line flags. Sizes accept ``KiB``,
``MiB`` and ``GiB`` suffixes (``"256KiB"``); durations accept ``s``, ``m``, ``h`` and
``d`` (``"14d"``). Every field is documented in ``docs/operating-a-relay.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import platformdirs

from .errors import ConfigError

__all__ = [
    "ADMISSION_PARAM",
    "ENV_PREFIX",
    "Admission",
    "Limits",
    "RelayConfig",
    "load_config",
    "parse_duration",
    "parse_size",
]

ENV_PREFIX: Final = "BACKCHANNEL_RELAY_"
#: The query parameter of ``/v1/ws`` that carries an admission token (``?admit=TOKEN``).
ADMISSION_PARAM: Final = "admit"
KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB
DAY: Final = 86_400

_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kib": KIB,
    "kb": 1000,
    "mib": MIB,
    "mb": 1000**2,
    "gib": GIB,
    "gb": 1000**3,
    "tib": 1024 * GIB,
}
_DURATION_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY}


def parse_size(value: object, name: str = "size") -> int:
    """Parse ``1048576``, ``"1MiB"`` or ``"512 KiB"`` into bytes."""
    return _parse_with_units(value, name, _SIZE_UNITS, "a size such as 1048576 or '1MiB'")


def parse_duration(value: object, name: str = "duration") -> int:
    """Parse ``3600``, ``"60m"`` or ``"14d"`` into whole seconds."""
    return _parse_with_units(value, name, _DURATION_UNITS, "a duration such as 3600 or '14d'")


def _parse_with_units(value: object, name: str, units: Mapping[str, int], what: str) -> int:
    number: float
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, ""
    elif isinstance(value, str) and (
        m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    ):
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ConfigError(f"{name} must be {what}.")
    if unit not in units:
        raise ConfigError(
            f"{name} has an unknown unit {unit!r}; use one of {', '.join(u for u in units if u)}."
        )
    try:
        result = int(number * units[unit])
    except OverflowError:
        raise ConfigError(f"{name} is too large.") from None
    if result < 0:
        raise ConfigError(f"{name} must not be negative.")
    return result


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection, per-mailbox and store-wide limits. Each refusal has a stable code."""

    max_frame_bytes: int = 1 * MIB
    """Largest WebSocket frame; a larger one closes the connection with code 1009."""
    max_blob_bytes: int = 256 * KIB
    """Largest blob in one entry (``too_large``)."""
    max_also: int = 32
    """Most extra entries (Welcomes) one append may carry."""
    max_fetch: int = 256
    """Most entries in one ``fetch`` page."""
    max_fetch_bytes: int = 768 * KIB
    """Most blob bytes in one ``fetch`` page (at least one entry is always returned)."""
    appends_per_second: float = 50.0
    """Token-bucket refill rate for appends on one connection (``rate_limited``)."""
    append_burst: int = 200
    """Token-bucket size: appends a connection may make at once."""
    requests_per_second: float = 500.0
    """Token-bucket refill rate for every other store-touching request (auth, fetch,
    subscribe, trim, rotate) on one connection (``rate_limited``)."""
    request_burst: int = 2000
    """Token-bucket size for those requests."""
    max_subscriptions: int = 512
    """Subscriptions one connection may hold (``too_many_subscriptions``)."""
    mailbox_max_entries: int = 100_000
    """Entries one mailbox may hold before readers trim it (``mailbox_full``)."""
    mailbox_max_bytes: int = 256 * MIB
    """Blob bytes one mailbox may hold (``mailbox_full``)."""
    store_max_bytes: int = 16 * GIB
    """Blob bytes the whole store may hold (``store_full``)."""
    min_free_disk_bytes: int = 256 * MIB
    """Refuse writes while the data directory's disk has less free space (``store_full``)."""
    send_queue_bytes: int = 8 * MIB
    """Outgoing bytes queued for one connection before it is closed as a slow consumer."""
    max_connections: int = 20_000
    """Open WebSocket connections before new ones are refused with HTTP 503."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A token that lets the connections presenting it create mailboxes.

    A connection presents it by opening ``/v1/ws?admit=TOKEN``. Used by the relay a
    client runs for a workshop LAN (``backchannel init --listen``), whose invite links
    carry the guests' token; see :attr:`RelayConfig.admission`.
    """

    token: str = field(repr=False)
    """16 to 128 characters of base64url (``A-Z a-z 0-9 - _``)."""
    creates: int | None = None
    """Mailboxes the connections presenting this token may create in all while the relay
    runs (``store_full`` after that); None for no limit."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", self.token):
            raise ConfigError("An admission token must be 16 to 128 base64url characters.")
        if self.creates is not None and self.creates < 0:
            raise ConfigError("An admission token's quota must not be negative.")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything ``backchannel-relay serve`` needs; build it with :func:`load_config`."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8765
    """TCP port to listen on."""
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path("backchannel-relay"))
    """Where the SQLite store lives (created with mode 0700)."""
    database_url: str | None = field(default=None, repr=False)
    """``sqlite:///path`` or ``postgresql://…``; defaults to SQLite in ``data_dir``.
    Hidden from repr because a PostgreSQL URL may hold a password."""
    database_pool_size: int = 10
    """Connections each relay node keeps to PostgreSQL for requests (plus one that
    LISTENs); ignored with SQLite."""
    tls_cert: Path | None = None
    """PEM certificate chain; serve wss:// natively when set with ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key for ``tls_cert``."""
    default_ttl: int = 14 * DAY
    """Seconds an entry lives when the mailbox was created without a TTL."""
    max_ttl: int = 90 * DAY
    """Largest TTL a mailbox or entry may ask for."""
    expiry_granularity: int = 3600
    """Expiry times are rounded up to a multiple of this, so the stored times say little
    about when a message was sent."""
    sweep_interval: float = 60.0
    """Seconds between sweeps of expired entries and mailboxes."""
    group_commit_max: int = 1024
    """Most writes that share one transaction and one fsync."""
    shutdown_timeout: float = 10.0
    """Seconds SIGTERM waits for in-flight requests before closing sockets."""
    metrics: bool = True
    """Serve ``GET /metrics``."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``; only ``debug`` may log mailbox ids."""
    limits: Limits = field(default_factory=Limits)
    admission: tuple[Admission, ...] = field(default=(), repr=False)
    """When not empty, only connections that present one of these tokens may create
    mailboxes (``denied`` otherwise), each token within its quota; everything else still
    works by capability alone. Empty (the default): anyone may create mailboxes. Set by
    the relay a client runs (``backchannel/embedded.py``); not read from a file, the
    environment or flags."""

    def sqlite_path(self) -> Path:
        """The SQLite file the default store uses."""
        return self.data_dir / "relay.sqlite3"

    def store_url(self) -> str:
        """The store URL, defaulting to SQLite in ``data_dir``."""
        return self.database_url or f"sqlite://{self.sqlite_path().resolve()}"

    def info(self) -> dict[str, Any]:
        """The limits a client needs, as sent in ``hello`` and ``GET /v1/info``."""
        lim = self.limits
        return {
            "max_frame_bytes": lim.max_frame_bytes,
            "max_blob_bytes": lim.max_blob_bytes,
            "max_also": lim.max_also,
            "max_fetch": lim.max_fetch,
            "max_fetch_bytes": lim.max_fetch_bytes,
            "appends_per_second": lim.appends_per_second,
            "append_burst": lim.append_burst,
            "requests_per_second": lim.requests_per_second,
            "request_burst": lim.request_burst,
            "max_subscriptions": lim.max_subscriptions,
            "mailbox_max_entries": lim.mailbox_max_entries,
            "mailbox_max_bytes": lim.mailbox_max_bytes,
            "default_ttl": self.default_ttl,
            "max_ttl": self.max_ttl,
            "expiry_granularity": self.expiry_granularity,
        }


_SIZE_FIELDS: Final = frozenset(
    {
        "max_frame_bytes",
        "max_blob_bytes",
        "max_fetch_bytes",
        "mailbox_max_bytes",
        "store_max_bytes",
        "min_free_disk_bytes",
        "send_queue_bytes",
    }
)
_DURATION_FIELDS: Final = frozenset({"default_ttl", "max_ttl", "expiry_granularity"})
_TOP_FIELDS: Final = {
    f.name: f for f in dataclasses.fields(RelayConfig) if f.name not in {"limits", "admission"}
}
_LIMIT_FIELDS: Final = {f.name: f for f in dataclasses.fields(Limits)}


def _convert(name: str, value: object) -> object:
    """Turn a TOML, environment or flag value into the field's type, or raise ConfigError."""
    if name in _SIZE_FIELDS:
        return parse_size(value, name)
    if name in _DURATION_FIELDS:
        return parse_duration(value, name)
    kind = (_TOP_FIELDS.get(name) or _LIMIT_FIELDS[name]).type
    try:
        if kind == "int":
            # int(80.7) would quietly drop the fraction.
            if isinstance(value, bool | float):
                raise ValueError
            return int(value)  # type: ignore[call-overload]
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)  # type: ignore[arg-type]
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        if kind in {"Path", "Path | None"}:
            if value is None or value == "":
                return None
            if not isinstance(value, str | os.PathLike):
                raise TypeError
            return Path(value).expanduser()
        if kind in {"str", "str | None"}:
            if value is None and "None" in kind:
                return None
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} has an invalid value; expected {kind}.") from None
    raise ConfigError(f"{name} has an unsupported type {kind}.")  # pragma: no cover


def _from_toml(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"The config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"The config file {path} cannot be read: {exc.__class__.__name__}."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {path} is not valid TOML: {exc}.") from None
    flat: dict[str, object] = {}
    for key, value in data.items():
        if key == "limits":
            if not isinstance(value, dict):
                raise ConfigError("[limits] in the config file must be a table.")
            for lkey, lvalue in value.items():
                if lkey not in _LIMIT_FIELDS:
                    raise ConfigError(f"Unknown setting limits.{lkey} in {path}.")
                flat[lkey] = lvalue
        elif key in _TOP_FIELDS:
            flat[key] = value
        else:
            raise ConfigError(f"Unknown setting {key!r} in {path}.")
    return flat


def _from_environ(environ: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in (*_TOP_FIELDS, *_LIMIT_FIELDS):
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            out[name] = value
    return out


def load_config(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    config_file: Path | None = None,
) -> RelayConfig:
    """Build the configuration from a TOML file, the environment and flag overrides.

    Args:
        environ: usually ``os.environ``; ``BACKCHANNEL_RELAY_CONFIG`` names a TOML file
            when ``config_file`` is not given.
        overrides: values from command-line flags (None values are ignored).
        config_file: a TOML file with top-level settings and a ``[limits]`` table.

    Raises:
        ConfigError: a sentence naming the bad setting.
    """
    environ = environ or {}
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"]).expanduser()
    merged: dict[str, object] = {}
    if config_file is not None:
        merged.update(_from_toml(config_file))
    merged.update(_from_environ(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    top: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, value in merged.items():
        converted = _convert(name, value)
        (top if name in _TOP_FIELDS else limits)[name] = converted
    config = RelayConfig(**top, limits=Limits(**limits))
    _validate(config)
    return config


def _validate(config: RelayConfig) -> None:
    lim = config.limits
    if not 0 <= config.port <= 65535:
        raise ConfigError("port must be between 0 and 65535.")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together.")
    if config.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("log_level must be debug, info, warning or error.")
    positive = {
        "max_frame_bytes": lim.max_frame_bytes,
        "max_blob_bytes": lim.max_blob_bytes,
        "max_fetch": lim.max_fetch,
        "max_fetch_bytes": lim.max_fetch_bytes,
        "append_burst": lim.append_burst,
        "request_burst": lim.request_burst,
        "max_subscriptions": lim.max_subscriptions,
        "mailbox_max_entries": lim.mailbox_max_entries,
        "mailbox_max_bytes": lim.mailbox_max_bytes,
        "send_queue_bytes": lim.send_queue_bytes,
        "max_connections": lim.max_connections,
        "default_ttl": config.default_ttl,
        "max_ttl": config.max_ttl,
        "expiry_granularity": config.expiry_granularity,
        "group_commit_max": config.group_commit_max,
        "database_pool_size": config.database_pool_size,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be greater than zero.")
    for name, rate in (
        ("appends_per_second", lim.appends_per_second),
        ("requests_per_second", lim.requests_per_second),
        ("sweep_interval", config.sweep_interval),
    ):
        if not rate > 0:
            raise ConfigError(f"{name} must be greater than zero.")
    if lim.max_also < 0:
        raise ConfigError("max_also must not be negative.")
    if config.shutdown_timeout < 0:
        raise ConfigError("shutdown_timeout must not be negative.")
    if config.default_ttl > config.max_ttl:
        raise ConfigError("default_ttl must not exceed max_ttl.")
    if lim.append_burst < 1 + lim.max_also:
        raise ConfigError(
            "append_burst must be at least 1 + max_also, or the largest appends never pass."
        )
    if lim.max_blob_bytes + 4 * KIB > lim.max_frame_bytes:
        raise ConfigError(
            "max_frame_bytes must exceed max_blob_bytes by at least 4 KiB of framing."
        )
