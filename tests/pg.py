"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, a temporary folder, a free port.

`PgServer.start()` runs initdb (trust authentication, no fsync) and pg_ctl; `url(dbname)` gives a SQLAlchemy URL
(psycopg 3); `create_database` / `drop_database` give each test a fresh database (30-60 ms each); `restart()`
is a real `pg_ctl restart` (every connection is cut); `stop()` removes the folder. As root, the server runs as
the `postgres` user (initdb refuses to run as root). A watchdog process stops the server and removes its folder
when the process that started it dies without stopping it (a test session killed by a timeout), so no server
is left behind. Needs no Python packages beyond SQLAlchemy and psycopg.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa


# Waits for the owner process to exit, then stops the server (if still running) and removes its folder.
WATCHDOG = """
import os, shutil, subprocess, sys, time
owner, prefix, folder = int(sys.argv[1]), sys.argv[2:-1], sys.argv[-1]
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(1.0)
if os.path.isdir(os.path.join(folder, "data")):
    subprocess.run(prefix + ["-D", os.path.join(folder, "data"), "-m", "immediate", "-w", "stop"],
                   capture_output=True, timeout=60)
shutil.rmtree(folder, ignore_errors=True)
"""


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why in one line."""


def pg_bindir() -> Path:
    """The folder holding initdb and pg_ctl: $PG_BINDIR, the newest /usr/lib/postgresql/N/bin, or PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PgUnavailable("no PostgreSQL binaries (initdb) found: apt-get install -y postgresql, or set PG_BINDIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One throwaway PostgreSQL cluster listening on 127.0.0.1."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.dir: Path | None = None
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._watchdog: subprocess.Popen | None = None

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(argv)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
            raise PgUnavailable(f"{Path(argv[0]).name} failed: {lines[-1]}")

    def start(self) -> "PgServer":
        if self.as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root but there is no postgres user to run the server as") from None
        try:
            import psycopg  # noqa: F401  (the driver the URLs name)
        except ImportError:
            raise PgUnavailable("psycopg is not installed: pip install -r requirements-cluster.txt") from None
        self.dir = Path(tempfile.mkdtemp(prefix="lab-pg-"))
        try:
            if self.as_root:
                shutil.chown(self.dir, "postgres", "postgres")
            self.port = free_port()
            pg_ctl = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + [str(self.bindir / "pg_ctl")]
            self._watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), *pg_ctl, str(self.dir)],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)
            data = str(self.dir / "data")
            self._run(str(self.bindir / "initdb"), "-D", data, "-A", "trust", "--no-sync", "-U", self.user,
                      "-E", "UTF8", "--locale", "C")
            self._run(str(self.bindir / "pg_ctl"), "-D", data, "-l", str(self.dir / "server.log"), "-o",
                      f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                      f"-c max_connections=200", "-w", "start")
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """`pg_ctl restart` (fast mode): every open connection is terminated, then the server comes back."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"),
                  "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        except (PgUnavailable, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"


def create_database(admin_url: str, prefix: str = "lab_test") -> str:
    """A new empty database on the server `admin_url` points at; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database `url` names, closing whatever connections it still has."""
    u = sa.engine.make_url(url)
    engine = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
    finally:
        engine.dispose()
