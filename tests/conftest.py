"""Shared fixtures: an isolated results store and data folder per test, and writers of real on-disk formats."""
from __future__ import annotations

import gzip
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers) each worker trains its own tiny nets: one torch thread per
    worker, as two threads per worker on a 2-core machine mostly spin-wait for each other's cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# --- the two pytest-xdist workers of `make test` (-n 2 --dist loadfile --no-loadscope-reorder) -------------------
# Each file runs on one worker (its module-scoped fixtures, trained nets or a Ray cluster, are built once); the files
# are handed out costliest first (FIRST, then the rest in name order), so that the two workers end together instead
# of one of them starting a long file last. (pytest-xdist's own order, most tests first, started the costliest
# files, which have few tests each, last.)
FIRST = ["test_studies_e2e.py", "test_ray.py", "test_worker.py", "test_worker_restarts.py", "test_browser.py",
         "test_store.py", "test_gpu_path.py", "test_studies.py", "test_train.py", "test_bad_input.py",
         "test_analysis_jobs.py", "test_checkpoints.py", "test_demo.py", "test_analysis.py", "test_dashboard.py"]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the order in which the workers' scheduler hands out the files
        rank = {name: i for i, name in enumerate(FIRST)}
        order = {id(item): i for i, item in enumerate(items)}
        items.sort(key=lambda item: (rank.get(item.path.name, len(FIRST)), order[id(item)]))


def pytest_sessionfinish(session, exitstatus):
    """Close the browser that figure exports started, so the run ends promptly."""
    from lab.export import stop_server

    stop_server()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own results and data folders, so nothing touches the user's."""
    monkeypatch.setenv("LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("LAB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("LAB_DB_URL", raising=False)
    yield


@pytest.fixture
def store(tmp_path):
    from lab.runs.store import Store

    return Store(tmp_path / "results")


# --- both databases: SQLite (the default) and PostgreSQL ----------------------------------------------------

@pytest.fixture(scope="session")
def pg_admin_url():
    """A PostgreSQL server for this test session, as a URL whose user may create databases: the one
    LAB_TEST_PG_URL names (CI may give one), else a throwaway server started here (Debian's binaries, a free
    port, a temporary folder; stopped at the end). Where none can be started the PostgreSQL tests skip, saying
    why, or fail under LAB_REQUIRE_SYSTEM=1."""
    url = os.environ.get("LAB_TEST_PG_URL")
    if url:
        yield url
        return
    server = start_pg_server()
    yield server.url()
    server.stop()


def start_pg_server():
    """A new throwaway PostgreSQL server (tests/pg.py), or the test skips (fails under LAB_REQUIRE_SYSTEM=1)."""
    import subprocess

    from pg import PgServer, PgUnavailable

    try:
        return PgServer().start()
    except (PgUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        if require_system():
            pytest.fail(f"PostgreSQL is required here (LAB_REQUIRE_SYSTEM=1) but cannot be started: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc} (install postgresql, or set LAB_TEST_PG_URL)")


@pytest.fixture
def pg_url(pg_admin_url):
    """A fresh, empty PostgreSQL database for one test (dropped after it, connections and all)."""
    from pg import create_database, drop_database

    url = create_database(pg_admin_url)
    yield url
    drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, monkeypatch):
    """Each database the store runs on: None for SQLite (the results folder's lab.db, the default), else a
    fresh PostgreSQL database's URL, also set as LAB_DB_URL so every Store and child process uses it."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("LAB_DB_URL", url)
    return url


@pytest.fixture
def db_store(db_url, tmp_path):
    """A results store on each database (see `db_url`)."""
    from lab.runs.store import Store

    store = Store(tmp_path / "results")
    yield store
    store.close()


def write_cifar10(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """Write a small CIFAR-10 in torchvision's on-disk format (cifar-10-batches-py pickles); returns its folder."""
    from lab.bench import write_cifar10_format

    return write_cifar10_format(root, n_train, n_test, seed) / "cifar-10-batches-py"


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write an unsigned-byte IDX file (MNIST's format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, n_train: int = 300, n_test: int = 60, gz: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train), gz)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), gz)
    return folder


def wait_for(predicate, timeout: float, what: str, every: float = 0.25):
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds pass (the test fails,
    naming `what`). The one waiting helper of the suite: processes, servers and workers are watched with it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def iterations_lasting(seconds: float, every: int = 100, least: int = 200, **options) -> int:
    """How many iterations (a multiple of `every`, at least `least`) a run of the smoke preset with `options` trains
    in about `seconds` here: timed now by a few training steps of that net in this process, on the run's threads,
    and the fastest window counted (on a machine that gets less busy the run still lasts that long). Tests that
    must catch a run mid-way (kill it, cancel it, restart its worker) size it by time: a slow CPU trains no more
    seconds than a fast one, and a fast one is not done before the test can catch it."""
    import math
    import tempfile
    from dataclasses import replace

    import torch

    from lab.config import make_config
    from lab.train import MemoryReporter, train

    cfg = make_config("smoke", **options)
    timing = replace(cfg, iterations=10 * every, log_every=5, eval_every=10 * every, checkpoint_every=10 * every)
    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as folder:
            rep = MemoryReporter(stop_at=20)  # stops after 4 windows, without the final evaluation
            train(timing, Path(folder) / "run", rep, resume=False)
    finally:
        torch.set_num_threads(threads)
    fastest = max(v for s, n, v in rep.scalars if n == "images_per_s" and s > 5)  # the first window warms up
    return max(least, every * math.ceil(seconds * fastest / cfg.batch_size / every))


def require_system() -> bool:
    """In CI (LAB_REQUIRE_SYSTEM=1) tests that need Debian packages fail instead of skipping."""
    return os.environ.get("LAB_REQUIRE_SYSTEM") == "1"


def snapshot(*roots: Path) -> dict:
    """What a refused input must leave as it was: every row of every table of each results store (read as data:
    the database file's bytes move with SQLite's journal) and every other file and folder under each root."""
    import hashlib
    import sqlite3

    out = {}
    for root in map(Path, roots):
        if not root.exists():
            out[str(root)] = None
            continue
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for p in sorted(root.rglob("*")):
            key = f"{root.name}/{p.relative_to(root)}"
            if p.name in ("lab.db-wal", "lab.db-shm", "worker.lock") or (p.name.startswith("worker-")
                                                                         and p.name.endswith(".lock")):
                continue
            if p.is_dir():
                out[key] = "dir"
            elif p.name == "lab.db":
                try:
                    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                    tables = [t for (t,) in con.execute("select name from sqlite_master where type='table' order by name")]
                    out[key] = {t: sorted(map(repr, con.execute(f'select * from "{t}"'))) for t in tables}
                    con.close()
                except sqlite3.DatabaseError:  # not a database: its bytes are what must not change
                    out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
