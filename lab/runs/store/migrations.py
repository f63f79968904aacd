"""Schema creation and in-place upgrades (one transaction; PostgreSQL serialises them with an advisory lock)."""
from __future__ import annotations

import sqlalchemy as sa

from ...errors import StoreError
from .schema import (
    SCHEMA_LOCK_KEY, SCHEMA_VERSION, V2_COLUMNS, V3_COLUMNS, artifacts_table, meta_table, metadata, runs_table,
    summaries_table,
)


class SchemaMixin:
    """Creates or upgrades the schema when a `Store` opens."""

    def _check_schema(self) -> None:
        """Create the tables in a new store, upgrade an older store in place (one transaction), refuse a newer one.
        A store opened read-only is never upgraded: an older one is refused with one line saying what upgrades it."""
        with self.read() as conn:
            version = _schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.where} has schema version {version}, this lab reads version {SCHEMA_VERSION}; "
                f"use a newer lab release or start a new results folder"
            )
        if version is not None and self.readonly:
            raise StoreError(
                f"results store {self.where} has schema version {version}, this lab reads version {SCHEMA_VERSION}; "
                f"a read-only command does not upgrade it: any command that writes to it (e.g. python -m lab worker) "
                f"or the dashboard upgrades it in place"
            )
        try:
            with self._guard(), self._connect(self._write_engine(), write=True) as conn:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        # processes opening an empty database at once: one creates the tables, the others wait
                        # here until it commits and then find them made
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
                    version = _schema_version(conn)  # another process may have done it meanwhile
                    if version is None:
                        metadata.create_all(conn)
                        conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                    elif version < SCHEMA_VERSION:
                        _migrate(conn, version)
        except StoreError as exc:
            what = "created" if version is None else f"upgraded from schema version {version} to {SCHEMA_VERSION}"
            raise StoreError(f"{exc} (the store could not be {what})") from None


def _schema_version(conn: sa.Connection) -> int | None:
    """The stored schema version, or None for an empty database."""
    # runs first: another process creates both tables in one transaction, so once runs is there meta is too
    # (asked the other way round, a creation committed between the two questions looked like a foreign database)
    has_runs = sa.inspect(conn).has_table("runs")
    if not sa.inspect(conn).has_table("meta"):
        if has_runs:
            raise StoreError("the database has a runs table but no schema version: not a Degradation Lab store")
        return None
    row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StoreError(f"the database's schema version {row[0]!r} is not a number: not a Degradation Lab store") from None


def _migrate(conn: sa.Connection, version: int) -> None:
    """Upgrade the schema in place from `version` to SCHEMA_VERSION, inside the caller's transaction."""
    dialect = conn.dialect
    if version == 1:
        _add_columns(conn, V2_COLUMNS)
        if dialect.name == "postgresql":  # SQLite stores text of any length in a VARCHAR column already
            conn.exec_driver_sql("ALTER TABLE runs ALTER COLUMN label TYPE TEXT, ALTER COLUMN tag TYPE TEXT, "
                                 "ALTER COLUMN seed TYPE BIGINT, ALTER COLUMN params TYPE BIGINT")
        artifacts_table.create(conn, checkfirst=True)
        version = 2
    if version == 2:  # a process's start time and boot beside its id (a recycled pid is not the run's process)
        _add_columns(conn, V3_COLUMNS)
        version = 3
    if version == 3:  # downsampled series for the pages (made as runs finish, or when first read)
        summaries_table.create(conn, checkfirst=True)
        version = 4
    if version != SCHEMA_VERSION:
        raise StoreError(f"no upgrade from schema version {version} to {SCHEMA_VERSION}")
    conn.execute(meta_table.update().where(meta_table.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def _add_columns(conn: sa.Connection, names) -> None:
    """Add the runs table's columns `names` that it lacks, as runs_table defines them."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    for name in names:
        if name not in present:
            ddl = sa.schema.CreateColumn(runs_table.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {ddl}")
