"""Connections: engines and SQLite pragmas, read and write transactions, PostgreSQL reconnects, upserts, the
database's clock, database errors as one line."""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event

from ...errors import StoreError
from .schema import RECONNECT_S


class EngineMixin:
    """The database plumbing of `Store` (its `engine`, `url`, `where` and `readonly` are set by `Store`)."""

    @staticmethod
    def _make_engine(url: str) -> sa.Engine:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})
            _configure_sqlite(engine)
            return engine
        # a server may have restarted since a pooled connection was last used: check it before handing it out
        return sa.create_engine(url, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()
        if self._writer is not None:
            self._writer.dispose()

    def _error(self, exc: BaseException) -> StoreError:
        cause = getattr(exc, "orig", None) or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return StoreError(f"results store {self.where}: {text}")

    def _write_engine(self) -> sa.Engine:
        if not self.readonly:
            return self.engine
        if self._writer is None:
            self._writer = self._make_engine(self.url)
        return self._writer

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed on exit. (Writes that must survive a
        database restart mid-transaction go through `_transact`, which can run them again.)"""
        if self.readonly:
            raise StoreError(f"results store {self.where} was opened read-only")
        with self._guard():
            with self._connect(self.engine, write=True) as conn:
                with conn.begin():
                    yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self._guard():
            with self._connect(self.engine) as conn:
                with conn.begin():
                    yield conn

    def _waits_for_server(self) -> bool:
        """True where a lost connection is waited for: a database server (not SQLite) that has answered before
        (a wrong URL or a server that never ran fails at once)."""
        return self._ready and self.engine.dialect.name != "sqlite"

    def _connect(self, engine: sa.Engine, write: bool = False) -> sa.Connection:
        """A connection from `engine` (marked for BEGIN IMMEDIATE when `write`). A server that has gone away
        (refusing connections while it restarts) is retried, with backoff, for up to RECONNECT_S."""
        deadline, delay = time.monotonic() + RECONNECT_S, 0.05
        while True:
            try:
                conn = engine.connect()
                break
            except sa.exc.DBAPIError:
                if not self._waits_for_server() or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)
        return conn.execution_options(lab_write=True) if write else conn

    def _transact(self, fn, engine: sa.Engine | None = None):
        """`fn(conn)` in one write transaction, committed on return; returns what `fn` returns.

        On a database server, a transaction cut off by a lost connection (the server restarted: the driver
        marks the connection invalidated) is run again from the start on a new connection, for up to
        RECONNECT_S, so `fn` must be safe to repeat (the store's are: metric rows are upserts, updates name
        their rows). Errors of any other kind are not retried."""
        if engine is None and self.readonly:
            raise StoreError(f"results store {self.where} was opened read-only")
        engine = engine or self.engine
        deadline, delay = time.monotonic() + RECONNECT_S, 0.05
        with self._guard():
            while True:
                try:
                    with self._connect(engine, write=True) as conn:
                        with conn.begin():
                            return fn(conn)
                except sa.exc.DBAPIError as exc:
                    if not (exc.connection_invalidated and self._waits_for_server()
                            and time.monotonic() + delay < deadline):
                        raise
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def _upsert(self, table: sa.Table, column: str):
        """An INSERT of `table` rows that replaces `column` of a row already stored under the same key (a write
        repeated after a lost connection, a step logged again), on SQLite and PostgreSQL; a plain INSERT
        elsewhere."""
        name = self.engine.dialect.name
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            return table.insert()
        stmt = insert(table)
        return stmt.on_conflict_do_update(index_elements=[c.name for c in table.primary_key.columns],
                                          set_={column: stmt.excluded[column]})

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Database and OS errors as one clear line naming the database and the cause."""
        try:
            yield
        except (sa.exc.DBAPIError, sqlite3.Error, sa.exc.ArgumentError) as exc:
            raise self._error(exc) from None
        except OSError as exc:
            raise StoreError(f"results store {self.where}: {exc.strerror or exc}") from None

    def _db_now(self):
        """The database's clock, in seconds since the epoch, as a SQL expression."""
        name = self.engine.dialect.name
        if name == "sqlite":
            return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
        if name == "postgresql":
            return sa.extract("epoch", sa.func.clock_timestamp())
        return sa.literal(time.time(), sa.Float)  # other databases: this host's clock

    def db_time(self, conn: sa.Connection | None = None) -> float:
        """The database's clock now (seconds since the epoch)."""
        if conn is not None:
            return float(conn.execute(sa.select(self._db_now())).scalar())
        with self.read() as c:
            return float(c.execute(sa.select(self._db_now())).scalar())


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only transaction control
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front, so two writers queue on busy_timeout instead of one failing
        # with "database is locked" when it upgrades a read lock; readers use WAL snapshots.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("lab_write") else "BEGIN")


def _sqlite_readonly_engine(path: Path) -> sa.Engine:
    """An engine that opens `path` with SQLite's mode=ro: no write lock, no journal-mode change. Where the
    folder cannot be written either (so SQLite cannot make the WAL index it needs), it falls back to
    `immutable=1`, which reads the file as it is."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path))}?mode=ro"
    frozen = f"file:{quote(str(path))}?immutable=1"

    def connect():
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA schema_version").fetchone()  # opens the file now, so a failure shows here
        except sqlite3.OperationalError:
            if os.access(path.parent, os.W_OK):
                raise
            conn = sqlite3.connect(frozen, uri=True, timeout=60, check_same_thread=False)
        conn.isolation_level = None
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA query_only=1")
        return conn

    # a pool of file connections (the "sqlite://" URL would otherwise get the in-memory database's per-thread pool)
    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database in LAB_DB_URL"
