"""Relay configuration: defaults, precedence, units, TOML errors, validation and store URLs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from relay.config import (
    DAY,
    ENV_PREFIX,
    GIB,
    KIB,
    MIB,
    Limits,
    RelayConfig,
    load_config,
    parse_duration,
    parse_size,
)
from relay.errors import ConfigError
from relay.store import open_store, sqlite_path_from_url
from relay.store.base import StoreLimits
from relay.store.sqlite import SQLiteStore


def env(**values: str) -> dict[str, str]:
    return {ENV_PREFIX + name.upper(): value for name, value in values.items()}


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    """Load a configuration that must fail; return the sentence the operator sees."""
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    message = info.value.message
    assert message.endswith("."), message
    assert "Traceback" not in message
    return message


# -- defaults and precedence ---------------------------------------------------------------


def test_defaults() -> None:
    config = load_config({})
    assert config == load_config()
    assert (config.host, config.port) == ("127.0.0.1", 8765)
    assert config.database_url is None
    assert config.tls_cert is None and config.tls_key is None
    assert (config.default_ttl, config.max_ttl) == (14 * DAY, 90 * DAY)
    assert config.expiry_granularity == 3600
    assert config.limits == Limits()
    assert config.limits.max_blob_bytes == 256 * KIB
    assert config.limits.store_max_bytes == 16 * GIB
    assert config.sqlite_path() == config.data_dir / "relay.sqlite3"
    assert config.store_url().startswith("sqlite:")
    assert sqlite_path_from_url(config.store_url()) == config.sqlite_path().resolve()


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'port = 1000\nhost = "0.0.0.0"\nlog_level = "debug"\n'
        '[limits]\nmax_fetch = 10\nmax_blob_bytes = "64KiB"\n',
    )
    from_file = load_config({}, None, path)
    assert (from_file.port, from_file.host, from_file.log_level) == (1000, "0.0.0.0", "debug")
    assert (from_file.limits.max_fetch, from_file.limits.max_blob_bytes) == (10, 64 * KIB)

    environ = env(port="2000", max_fetch="20")
    from_env = load_config(environ, None, path)
    assert (from_env.port, from_env.host, from_env.limits.max_fetch) == (2000, "0.0.0.0", 20)
    assert from_env.limits.max_blob_bytes == 64 * KIB

    flags = {"port": 3000, "host": None, "max_fetch": 30}
    from_flags = load_config(environ, flags, path)
    assert (from_flags.port, from_flags.host, from_flags.limits.max_fetch) == (3000, "0.0.0.0", 30)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = toml(tmp_path, "port = 4242\n")
    assert load_config(env(config=str(path))).port == 4242
    other = tmp_path / "other.toml"
    other.write_text("port = 4343\n", encoding="utf-8")
    assert load_config(env(config=str(path)), None, other).port == 4343


def test_environment_conversions() -> None:
    config = load_config(
        env(
            metrics="off",
            default_ttl="2d",
            max_ttl="30d",
            expiry_granularity="1h",
            sweep_interval="2.5",
            appends_per_second="7.5",
            data_dir="/srv/relay",
            tls_cert="/etc/c.pem",
            tls_key="/etc/k.pem",
            mailbox_max_bytes="1 MiB",
            group_commit_max="16",
        )
    )
    assert config.metrics is False
    assert (config.default_ttl, config.max_ttl, config.expiry_granularity) == (
        2 * DAY,
        30 * DAY,
        3600,
    )
    assert (config.sweep_interval, config.limits.appends_per_second) == (2.5, 7.5)
    assert config.data_dir == Path("/srv/relay")
    assert config.tls_cert == Path("/etc/c.pem")
    assert config.limits.mailbox_max_bytes == MIB
    assert config.group_commit_max == 16


def test_empty_environment_values_are_unset() -> None:
    assert load_config(env(port="", host="")).port == 8765


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("yes", True), ("ON", True), ("true", True), ("0", False), ("no", False)],
)
def test_booleans(text: str, expected: bool) -> None:
    assert load_config(env(metrics=text)).metrics is expected


# -- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1048576, MIB),
        ("1048576", MIB),
        ("1MiB", MIB),
        ("512 KiB", 512 * KIB),
        (" 2gib ", 2 * GIB),
        ("1.5KiB", 1536),
        ("10kb", 10_000),
        ("3MB", 3_000_000),
        ("1GB", 10**9),
        ("1TiB", 1024 * GIB),
        ("7b", 7),
        ("7B", 7),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3600, 3600),
        ("3600", 3600),
        ("45s", 45),
        ("60m", 3600),
        ("2h", 7200),
        ("14d", 14 * DAY),
        ("1.5h", 5400),
        (" 1 D ", DAY),
    ],
)
def test_parse_duration(value: object, expected: int) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "MiB",
        "-1",
        -1,
        "1e6",
        "1 2",
        "1,5MiB",
        "1XB",
        "1w",
        True,
        None,
        1.5,
        [1],
        "9" * 400,
    ],
)
@pytest.mark.parametrize("parse", [parse_size, parse_duration])
def test_bad_sizes_and_durations(parse: Any, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse(value, "the_setting")
    assert info.value.message.startswith("the_setting ")


def test_unknown_unit_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"KiB|kib"):
        parse_size("5 PB", "max_blob_bytes")
    with pytest.raises(ConfigError, match="'w'"):
        parse_duration("2w", "max_ttl")


# -- TOML errors ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = config_error(config_file=tmp_path / "absent.toml")
    assert "absent.toml" in message and "does not exist" in message


def test_missing_file_named_by_environment(tmp_path: Path) -> None:
    assert "absent.toml" in config_error(environ=env(config=str(tmp_path / "absent.toml")))


def test_unreadable_file(tmp_path: Path) -> None:
    assert "cannot be read" in config_error(config_file=tmp_path)  # a directory
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"port = \xff\xfe\n")
    assert "cannot be read" in config_error(config_file=binary)


@pytest.mark.parametrize(
    "text", ["port = ", "[limits\nmax_fetch = 1", "port = 1\nport = 2", "= 3", 'host = "open']
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    assert "not valid TOML" in config_error(config_file=toml(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("prot = 80", "'prot'"),
        ("[server]\nport = 80", "'server'"),
        ("max_fetch = 10", "'max_fetch'"),  # a limit outside [limits]
        ("[limits]\nmax_fetches = 10", "limits.max_fetches"),
        ("[limits]\nport = 80", "limits.port"),
        ("limits = 5", "[limits]"),
    ],
)
def test_unknown_settings(tmp_path: Path, text: str, named: str) -> None:
    assert named in config_error(config_file=toml(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('port = "eighty"', "port"),
        ("port = true", "port"),
        ("port = 80.7", "port"),
        ("port = [80]", "port"),
        ("host = 5", "host"),
        ('host = ["a"]', "host"),
        ("data_dir = 5", "data_dir"),
        ('metrics = "maybe"', "metrics"),
        ("metrics = 2", "metrics"),
        ("sweep_interval = true", "sweep_interval"),
        ('sweep_interval = "soon"', "sweep_interval"),
        ("sweep_interval = nan", "sweep_interval"),
        ("group_commit_max = {a = 1}", "group_commit_max"),
        ("max_ttl = 1.5", "max_ttl"),
        ("max_ttl = true", "max_ttl"),
        ('default_ttl = "forever"', "default_ttl"),
        ('[limits]\nmax_blob_bytes = "lots"', "max_blob_bytes"),
        ("[limits]\nappends_per_second = inf", "appends_per_second"),
        ("[limits]\nmax_fetch = 1e3", "max_fetch"),
        ("[limits]\nstore_max_bytes = 1985-01-01", "store_max_bytes"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, named: str) -> None:
    assert named in config_error(config_file=toml(tmp_path, text))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "80.5"),
        ("port", "x"),
        ("port", "9" * 5000),
        ("sweep_interval", "nan"),
        ("appends_per_second", "-inf"),
        ("max_blob_bytes", "9" * 400),
        ("default_ttl", "1 fortnight"),
    ],
)
def test_bad_environment_values(name: str, value: str) -> None:
    assert name in config_error(environ=env(**{name: value}))


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"tls_cert": "/etc/cert.pem"}, "tls_key"),
        ({"tls_key": "/etc/key.pem"}, "tls_cert"),
        ({"default_ttl": "100d"}, "default_ttl"),
        ({"default_ttl": "2h", "max_ttl": "1h"}, "max_ttl"),
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"log_level": "verbose"}, "log_level"),
        ({"max_fetch": 0}, "max_fetch"),
        ({"max_blob_bytes": 0}, "max_blob_bytes"),
        ({"mailbox_max_entries": -5}, "mailbox_max_entries"),
        ({"max_connections": 0}, "max_connections"),
        ({"group_commit_max": 0}, "group_commit_max"),
        ({"expiry_granularity": 0}, "expiry_granularity"),
        ({"max_ttl": 0}, "max_ttl"),
        ({"appends_per_second": 0.0}, "appends_per_second"),
        ({"sweep_interval": -1.0}, "sweep_interval"),
        ({"shutdown_timeout": -1.0}, "shutdown_timeout"),
        ({"max_blob_bytes": MIB, "max_frame_bytes": MIB}, "max_frame_bytes"),
    ],
)
def test_validation(settings: dict[str, object], named: str) -> None:
    assert named in config_error(overrides=settings)


def test_tls_pair_is_accepted() -> None:
    config = load_config(overrides={"tls_cert": Path("/c.pem"), "tls_key": "/k.pem"})
    assert (config.tls_cert, config.tls_key) == (Path("/c.pem"), Path("/k.pem"))


def test_database_url_is_hidden_from_repr() -> None:
    url = "postgresql://relay:hunter2@db.internal/relay"
    config = load_config(env(database_url=url))
    assert config.database_url == url
    assert config.store_url() == url
    assert "hunter2" not in repr(config)
    assert "db.internal" not in repr(config)
    assert "hunter2" not in str(config)


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert isinstance(config, RelayConfig)


# -- store URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/relay/relay.sqlite3", Path("/var/lib/relay/relay.sqlite3")),
        ("sqlite:relative/relay.sqlite3", Path("relative/relay.sqlite3")),
        ("sqlite:relay.sqlite3", Path("relay.sqlite3")),
        ("sqlite:///with%20space/r.db", Path("/with space/r.db")),
        ("sqlite:///tmp/r.db?mode=rwc", Path("/tmp/r.db")),
        ("sqlite://data/r.db", Path("data/r.db")),
        ("SQLITE:///tmp/r.db", Path("/tmp/r.db")),
        ("sqlite:////tmp/r.db", Path("/tmp/r.db")),
    ],
)
def test_sqlite_path_from_url(url: str, path: Path) -> None:
    assert sqlite_path_from_url(url) == path


def test_sqlite_url_expands_home() -> None:
    assert sqlite_path_from_url("sqlite:~/relay.db") == Path.home() / "relay.db"


@pytest.mark.parametrize(
    "url", ["sqlite:", "sqlite://", "sqlite:///", "postgresql://h/db", "/var/relay.db", ""]
)
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        sqlite_path_from_url(url)


def test_open_store_sqlite(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/relay.sqlite3", StoreLimits())
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "relay.sqlite3"
    assert not store.path.exists()  # built, not opened


@pytest.mark.parametrize(
    "url", ["postgresql://relay@localhost/relay", "postgres://relay@localhost/relay"]
)
def test_open_store_postgres_is_built_not_connected(url: str) -> None:
    from relay.store.postgres import PostgresStore

    assert isinstance(open_store(url, StoreLimits()), PostgresStore)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://relay@localhost/relay",
        "file:///tmp/relay.db",
        "/tmp/relay.db",
        "",
    ],
)
def test_open_store_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url, StoreLimits())
    assert info.value.message.endswith(".")
