"""Typed keys for what the relay keeps on its ``web.Application``."""

from __future__ import annotations

from aiohttp import web

from .config import RelayConfig
from .connection import Connection
from .metrics import RelayMetrics
from .operations import Operations
from .store.base import MailboxStore

__all__ = ["CONFIG", "CONNECTIONS", "METRICS", "OPERATIONS", "SERVER_NAME", "STORE"]

CONFIG = web.AppKey[RelayConfig]("config")
STORE = web.AppKey[MailboxStore]("store")
METRICS = web.AppKey[RelayMetrics]("metrics")
OPERATIONS = web.AppKey[Operations]("operations")
CONNECTIONS = web.AppKey[set[Connection]]("connections")
SERVER_NAME = web.AppKey[str]("server_name")
