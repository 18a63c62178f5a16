"""The SQL backends: one layer (:mod:`stores.sql.base`, :mod:`stores.sql.schema`) and a small
part per database (:mod:`stores.sql.sqlite`)."""

from __future__ import annotations

from stores.sql.base import Dialect, SqlStore, SqlTxn
from stores.sql.schema import SCHEMA_VERSION
from stores.sql.sqlite import SqliteStore

__all__ = ["SCHEMA_VERSION", "Dialect", "SqlStore", "SqlTxn", "SqliteStore"]
