"""Mistaken and hostile input, through the CLI, the store API the pages use, and the Launch page.

For every input: a non-zero exit (or a StoreError / ConfigError from the API, or a message on the page), one
clear line that names the problem and what is allowed, no traceback, and the results store and its run folders
exactly as they were (compared before and after).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from conftest import ROOT, snapshot
from lab.__main__ import main
from lab.checkpoint import REQUIRED, checkpoint_problem
from lab.config import make_config
from lab.fill import simulate_run
from lab.models import ConfigError
from lab.runs.store import SCHEMA_VERSION, Store, StoreError, meta_table

HAS_GPU = torch.cuda.is_available()


class PlantedCode:
    """Unpickling this runs a shell command (what a planted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def lab_store(tmp_path_factory):
    """A store with runs in every state a command can meet, plus broken stores next to it."""
    base = tmp_path_factory.mktemp("bad-input")
    root = base / "results"
    store = Store(root)
    ids = {}
    short = dict(iterations=400, log_every=100, eval_every=200)
    ids["done"] = simulate_run(store, "plain", 20, 0, **short)
    ids["done2"] = simulate_run(store, "plain", 20, 1, **short)   # shares the prefix "plain20-" with done
    (ids["queued"],) = store.create_runs([make_config("smoke", depth=32)])
    ids["nockpt"] = simulate_run(store, "residual", 44, 0, status="interrupted", **short)
    ids["trunc"] = simulate_run(store, "residual", 56, 0, status="cancelled", **short)
    ids["foreign"] = simulate_run(store, "plain", 56, 0, status="failed", **short)
    ids["evil"] = simulate_run(store, "plain", 32, 0, status="interrupted", **short)
    (ids["running"],) = store.create_runs([make_config("smoke", depth=20)], status="running")  # this process: alive
    (ids["fresh"],) = store.create_runs([make_config("smoke", depth=26)])
    store.request_cancel(ids["fresh"])  # cancelled before it started: resumable, nothing to lose
    good = torch.nn.Linear(2, 2).state_dict()
    torch.save({"model": good, "step": 1}, base / "real.pt")
    for key in ("trunc", "foreign", "evil"):
        store.run_dir(ids[key]).mkdir(parents=True, exist_ok=True)
    (store.run_dir(ids["trunc"]) / "checkpoint.pt").write_bytes((base / "real.pt").read_bytes()[:120])
    torch.save({"weights": torch.zeros(3)}, store.run_dir(ids["foreign"]) / "checkpoint.pt")
    marker = base / "planted-code-ran"
    torch.save({**{k: 0 for k in REQUIRED}, "hook": PlantedCode(marker)}, store.run_dir(ids["evil"]) / "checkpoint.pt")
    store.run_dir(ids["done"]).mkdir(parents=True)
    (store.run_dir(ids["done"]) / "log.txt").write_text("iteration 100/400\n")
    store.close()

    # broken stores
    (base / "afile").write_text("not a folder\n")
    corrupt = base / "corrupt"
    corrupt.mkdir()
    (corrupt / "lab.db").write_bytes(b"this is not a database" * 100)
    newer = base / "newer"
    Store(newer).close()
    eng = sa.create_engine(f"sqlite:///{newer / 'lab.db'}")
    with eng.begin() as conn:
        conn.execute(meta_table.update().values(value=str(SCHEMA_VERSION + 1)))
    eng.dispose()
    paths = dict(root=root, file=base / "afile", corrupt=corrupt, newer=newer, missing=base / "missing")
    return paths, ids, marker


def fill(argv, paths, ids):
    return [a.format(**{k: str(v) for k, v in paths.items()}, **ids) for a in argv]


R = ["--results", "{root}"]
RUN = ["run", "--preset", "smoke", "--quiet", *R]
SWEEP = ["sweep", "--preset", "smoke", "--no-worker", *R]

# (name, argv, a phrase the one-line message must contain)
CLI_CASES = [
    # --- run: every option's out-of-range and wrong-type values ---
    ("depth-invalid", [*RUN, "--depth", "21"], "nearest valid depths: 20 or 26"),
    ("depth-huge", [*RUN, "--depth", "99998"], "depth must be from 1 to 2000"),
    ("depth-negative", [*RUN, "--depth", "-4"], "depth must be from 1 to 2000"),
    ("depth-text", [*RUN, "--depth", "abc"], "invalid int value: 'abc'"),
    ("lr-negative", [*RUN, "--lr", "-1"], "lr must be a positive number"),
    ("lr-inf", [*RUN, "--lr", "inf"], "lr must be a positive number (finite), got inf"),
    ("lr-nan", [*RUN, "--lr", "nan"], "lr must be a positive number (finite), got nan"),
    ("lr-overflow", [*RUN, "--lr", "1e999"], "lr must be a positive number (finite)"),
    ("weight-decay-inf", [*RUN, "--weight-decay", "inf"], "weight_decay must be a number >= 0 (finite)"),
    ("momentum-range", [*RUN, "--momentum", "1.5"], "momentum must be a finite number in [0, 1)"),
    ("momentum-text", [*RUN, "--momentum", "fast"], "momentum: 'fast' is not a valid float"),
    ("batch-zero", [*RUN, "--batch-size", "0"], "batch_size must be a whole number from 1 to 65,536"),
    ("batch-huge", [*RUN, "--batch-size", "100000"], "batch_size must be a whole number from 1 to 65,536"),
    ("batch-over-training-set", [*RUN, "--batch-size", "4096"], "larger than the training set (2,048 images"),
    ("seed-float", [*RUN, "--seed", "1e23"], "invalid int value: '1e23'"),
    ("seed-huge", [*RUN, "--seed", str(10**23)], "seed must be a whole number from 0 to 9,223,372,036,854,775,807"),
    ("seed-negative", [*RUN, "--seed", "-1"], "seed must be a whole number from 0"),
    ("threads-huge", [*RUN, "--threads", "100000"], "threads must be a whole number from 0 to 1,024"),
    ("threads-negative", [*RUN, "--threads", "-2"], "threads must be a whole number from 0 to 1,024"),
    ("device-malformed", [*RUN, "--device", "cuda:abc"], "device must be auto, cpu, cuda or cuda:N"),
    ("device-unknown", [*RUN, "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    ("iterations-text", [*RUN, "--iterations", "ten"], "iterations: 'ten' is not a valid int"),
    ("iterations-zero", [*RUN, "--iterations", "0"], "iterations must be a whole number from 1 to 10,000,000"),
    ("iterations-huge", [*RUN, "--iterations", "1000000000000"], "iterations must be a whole number from 1 to 10,000,000"),
    ("milestones-text", [*RUN, "--milestones", "0.5,abc"], "milestones: '0.5,abc' is not a valid"),
    ("milestones-order", [*RUN, "--milestones", "0.9,0.5"], "milestones must be at most 100 increasing fractions"),
    ("milestones-range", [*RUN, "--milestones", "1.5"], "between 0 and 1"),
    ("shortcut", [*RUN, "--shortcut", "Q"], "shortcut 'Q' is not one of A, B, C"),
    ("block", [*RUN, "--block", "huge"], "block 'huge' is not one of"),
    ("span", [*RUN, "--span", "7"], "at depth 20 the span can be 1, 2, 3, 6"),
    ("norm", [*RUN, "--norm", "ln"], "norm 'ln' is not one of"),
    ("init", [*RUN, "--init", "zeros"], "init 'zeros' is not one of"),
    ("dataset", [*RUN, "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    ("preset", ["run", "--preset", "fast", *R], "invalid choice: 'fast'"),
    ("kind", [*RUN, "--kind", "resnet"], "invalid choice: 'resnet'"),
    ("width-zero", [*RUN, "--width", "0"], "width 0.0 must be a number from 0.0625 to 16"),
    ("width-nan", [*RUN, "--width", "nan"], "width nan must be a number from 0.0625 to 16"),
    ("val-fraction", [*RUN, "--val-fraction", "1"], "val_fraction must be a finite number in (0, 1)"),
    ("val-fraction-tiny", [*RUN, "--val-fraction", "1e-9"], "holds out no validation image"),
    ("train-limit", [*RUN, "--train-limit", "-1"], "train_limit must be a whole number from 0"),
    ("eval-every-zero", [*RUN, "--eval-every", "0"], "eval_every must be a whole number from 1"),
    ("eval-images-negative", [*RUN, "--eval-images", "-5"], "eval_images must be a whole number from 0"),
    ("log-every-text", [*RUN, "--log-every", "often"], "log_every: 'often' is not a valid int"),
    ("checkpoint-every-float", [*RUN, "--checkpoint-every", "1e3"], "checkpoint_every: '1e3' is not a valid int"),
    ("probe-batch-zero", [*RUN, "--probe-batch", "0"], "probe_batch must be a whole number from 1"),
    ("lr-decay-zero", [*RUN, "--lr-decay", "0"], "lr_decay must be a finite number in (0, 1]"),
    ("warmup-lr-negative", [*RUN, "--warmup-lr", "-0.1"], "warmup_lr must be a positive number"),
    ("precision", [*RUN, "--precision", "fp8"], "precision must be one of auto, fp32, bf16"),
    ("warmup", [*RUN, "--warmup", "maybe"], "warmup must be one of auto, on, off"),
    ("bool-flag-value", [*RUN, "--augment", "yes"], "unrecognized arguments: yes"),
    ("unknown-option", [*RUN, "--shortcutz", "A"], "unrecognized arguments: --shortcutz"),
    # --- tags: control characters, text-direction tricks, length ---
    ("tag-escape-sequence", [*RUN, "--tag", "\x1b[31mred"], "tag must not hold control or text-direction characters (found U+001B)"),
    ("tag-bell", [*RUN, "--tag", "ring\x07"], "found U+0007"),
    ("tag-newline", [*RUN, "--tag", "two\nlines"], "found U+000A"),
    ("tag-bidi-override", [*RUN, "--tag", "invoice\u202etxt.exe"], "found U+202E"),
    ("tag-too-long", [*RUN, "--tag", "x" * 300], "tag must be at most 200 characters, got 300"),
    # --- sweep: malformed grids, huge and empty lists ---
    ("grid-no-equals", [*SWEEP, "--grid", "shortcut"], "--grid takes OPTION=V1,V2"),
    ("grid-no-option", [*SWEEP, "--grid", "=A,B"], "names no option"),
    ("grid-unknown-option", [*SWEEP, "--grid", "bogus=1,2"], "unknown option 'bogus'"),
    ("grid-reserved-option", [*SWEEP, "--grid", "depth=20,56"], "option 'depth' is set by the sweep's own fields"),
    ("grid-bad-value", [*SWEEP, "--grid", "lr=0.1,abc"], "lr: 'abc' is not a valid float"),
    ("grid-no-values", [*SWEEP, "--grid", "shortcut="], "option 'shortcut': give at least one value"),
    ("grid-twice", [*SWEEP, "--grid", "shortcut=A", "--grid", "shortcut=B"], "names option 'shortcut' twice"),
    ("grid-bad-choice", [*SWEEP, "--grid", "shortcut=A,Z"], "shortcut 'Z' is not one of A, B, C"),
    ("grid-infinite-lr", [*SWEEP, "--grid", "lr=0.1,inf"], "lr must be a positive number (finite), got inf"),
    ("depths-empty", [*SWEEP, "--depths", ""], "depths: give at least one"),
    ("depths-text", [*SWEEP, "--depths", "20,abc"], "'abc' is not a valid int"),
    ("kinds-empty", [*SWEEP, "--kinds", ",,"], "kinds: give at least one"),
    ("kinds-bad", [*SWEEP, "--kinds", "plain,resnet"], "kind 'resnet' is not one of"),
    ("seeds-zero", [*SWEEP, "--seeds", "0"], "--seeds must be from 1 to 100,000"),
    ("seeds-huge", [*SWEEP, "--seeds", "10000000"], "--seeds must be from 1 to 100,000"),
    ("seeds-negative", [*SWEEP, "--seeds", "-1"], "--seeds must be from 1 to 100,000"),
    ("seed-list-text", [*SWEEP, "--seed-list", "1,x"], "'x' is not a valid int"),
    ("seed-list-empty", [*SWEEP, "--seed-list", ""], "--seed-list needs at least one seed"),
    ("seed-list-huge", [*SWEEP, "--seed-list", str(2**64)], "seed must be a whole number from 0"),
    ("seed-start-negative", [*SWEEP, "--seed-start", "-5"], "--seed-start must be from 0"),
    ("sweep-too-large", [*SWEEP, "--depths", ",".join(str(6 * n + 2) for n in range(1, 21)), "--seeds", "5000"],
     "a sweep may queue at most 100,000"),
    ("sweep-per-gpu-zero", [*SWEEP, "--per-gpu", "0"], "--per-gpu must be from 1 to 64"),
    ("sweep-slots-negative", [*SWEEP, "--slots", "-1"], "--slots must be from 0 (automatic) to 256"),
    ("sweep-tag-control", [*SWEEP, "--tag", "=cmd|' /C calc'!A0\x00"], "found U+0000"),
    ("sweep-batch-over-set", [*SWEEP, "--batch-size", "9000", "--train-limit", "100"], "larger than the training set"),
    # --- ls / show ---
    ("ls-status-bogus", ["ls", "--status", "bogus", *R], "unknown status 'bogus'; statuses: queued, running, done"),
    ("ls-status-empty", ["ls", "--status", ",", *R], "--status needs at least one status; statuses: queued"),
    ("show-unknown", ["show", "nope", *R], "no run 'nope'"),
    ("show-empty", ["show", "", *R], "an empty run id names no run"),
    ("show-percent", ["show", "%", *R], "no run '%'"),
    ("show-underscore", ["show", "_", *R], "no run '_'"),
    ("show-ambiguous", ["show", "plain20-", *R], "run id prefix 'plain20-' is ambiguous: it matches 2 runs"),
    ("show-other-case", ["show", "PLAIN20", *R], "case-sensitive"),
    ("show-lines-negative", ["show", "{done}", "--lines", "-1", *R], "--lines must be from 0 to 10000"),
    # --- cancel / resume / delete: exact ids or unique prefixes, all checked first ---
    ("delete-percent", ["delete", "%", *R], "no run '%'"),
    ("delete-empty", ["delete", "", *R], "an empty run id names no run"),
    ("delete-whitespace", ["delete", "  ", *R], "an empty run id names no run"),
    ("delete-underscores", ["delete", "________", *R], "no run '________'"),
    ("delete-ambiguous", ["delete", "plain20", *R], "is ambiguous: it matches 2 runs (plain20-"),
    ("delete-several-without-yes", ["delete", "{done}", "{queued}", *R], "deleting 2 runs"),
    ("delete-running", ["delete", "{running}", *R], "is running; cancel it first"),
    ("delete-known-and-unknown", ["delete", "{done}", "nope", "--yes", *R], "no run 'nope'"),
    ("cancel-finished", ["cancel", "{done}", *R], "only queued or running runs can be cancelled"),
    ("cancel-percent", ["cancel", "%", *R], "no run '%'"),
    ("cancel-known-and-unknown", ["cancel", "{queued}", "nope", *R], "no run 'nope'"),
    ("resume-finished", ["resume", "{done}", "--no-worker", *R], "is done; only cancelled, interrupted, failed runs"),
    ("resume-queued", ["resume", "{queued}", "--no-worker", *R], "is queued; only cancelled"),
    ("resume-no-checkpoint", ["resume", "{nockpt}", "--no-worker", *R], "is missing; resume it with --from-scratch"),
    ("resume-truncated-checkpoint", ["resume", "{trunc}", "--no-worker", *R], "is unreadable (truncated, or not a checkpoint)"),
    ("resume-foreign-checkpoint", ["resume", "{foreign}", "--no-worker", *R], "is not a Degradation Lab checkpoint (missing: model"),
    ("resume-planted-code", ["resume", "{evil}", "--no-worker", *R], "holds objects other than tensors and plain data"),
    ("resume-percent", ["resume", "%", "--no-worker", *R], "no run '%'"),
    ("resume-good-and-bad", ["resume", "{fresh}", "{nockpt}", "--no-worker", *R], "{nockpt} has progress"),
    ("resume-per-gpu-zero", ["resume", "{nockpt}", "--per-gpu", "0", *R], "--per-gpu must be from 1"),
    # --- stores that are not there, not folders, not databases, or from a newer lab ---
    ("ls-results-is-a-file", ["ls", "--results", "{file}"], "is a file, not a folder"),
    ("sweep-results-is-a-file", ["sweep", "--preset", "smoke", "--no-worker", "--results", "{file}"], "is a file, not a folder"),
    ("run-results-is-a-file", ["run", "--preset", "smoke", "--quiet", "--results", "{file}"], "is a file, not a folder"),
    ("ls-corrupt-database", ["ls", "--results", "{corrupt}"], "file is not a database"),
    ("show-corrupt-database", ["show", "x", "--results", "{corrupt}"], "file is not a database"),
    ("sweep-corrupt-database", ["sweep", "--preset", "smoke", "--no-worker", "--results", "{corrupt}"], "file is not a database"),
    ("ls-newer-schema", ["ls", "--results", "{newer}"], f"has schema version {SCHEMA_VERSION + 1}, this lab reads version {SCHEMA_VERSION}"),
    ("cancel-newer-schema", ["cancel", "x", "--results", "{newer}"], f"schema version {SCHEMA_VERSION + 1}"),
    ("ls-missing-store", ["ls", "--results", "{missing}"], "no results store at"),
    ("delete-missing-store", ["delete", "x", "--results", "{missing}"], "no results store at"),
    # --- other commands ---
    ("worker-per-gpu-zero", ["worker", "--per-gpu", "0", *R], "--per-gpu must be from 1 to 64"),
    ("worker-slots-negative", ["worker", "--slots", "-3", *R], "--slots must be from 0 (automatic) to 256"),
    ("export-unknown-figure", ["export", "--figures", "pie", "--formats", "csv", "--out", "{root}/../export", *R], "unknown figure(s) pie"),
    ("export-unknown-format", ["export", "--formats", "docx", "--out", "{root}/../export", *R], "unknown format(s) 'docx'"),
    ("export-unknown-run", ["export", "nope", "--out", "{root}/../export", *R], "no run 'nope'"),
    ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("no-command", [], "the following arguments are required: COMMAND"),
]
if not HAS_GPU:
    CLI_CASES += [
        ("device-cuda-without-gpu", [*RUN, "--device", "cuda"], "device 'cuda' needs a CUDA GPU and this machine has none"),
        ("device-cuda-index-without-gpu", [*RUN, "--device", "cuda:1"], "device 'cuda:1' needs a CUDA GPU"),
        ("sweep-cuda-without-gpu", ["sweep", "--preset", "smoke", "--device", "cuda", *R], "needs a CUDA GPU"),
    ]


def _watched(paths) -> list[Path]:
    return [paths["root"], paths["file"], paths["corrupt"], paths["newer"], paths["missing"],
            paths["root"].parent / "export"]


def one_clear_line(err: str, expect: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]


@pytest.mark.parametrize("name,argv,expect", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_clearly_and_changes_nothing(lab_store, name, argv, expect, capsys):
    paths, ids, marker = lab_store
    argv, expect = fill(argv, paths, ids), expect.format(**ids)
    before = snapshot(*_watched(paths))
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc != 0, out
    one_clear_line(err, expect)
    assert snapshot(*_watched(paths)) == before
    assert not marker.exists()  # the planted checkpoint was never unpickled


SUBPROCESS_CASES = ["depth-invalid", "delete-percent", "resume-planted-code", "ls-corrupt-database", "grid-no-equals",
                    "unknown-option"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_cli_refuses_clearly_as_a_real_process(lab_store, name):
    paths, ids, marker = lab_store
    _, argv, expect = next(c for c in CLI_CASES if c[0] == name)
    before = snapshot(*_watched(paths))
    proc = subprocess.run([sys.executable, "-m", "lab", *fill(argv, paths, ids)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stdout
    one_clear_line(proc.stderr, expect.format(**ids))
    assert snapshot(*_watched(paths)) == before and not marker.exists()


def test_a_full_disk_is_one_clear_line_and_queues_nothing(lab_store, capsys):
    """SQLite's 'database or disk is full', simulated by capping the database at its current size."""
    import sqlite3

    paths, ids, _ = lab_store
    db = paths["root"] / "lab.db"
    pages = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("pragma page_count").fetchone()[0]

    def cap(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    before = snapshot(paths["root"])
    sa.event.listen(sa.engine.Engine, "connect", cap)
    try:
        rc = main([*fill(SWEEP, paths, ids), "--seeds", "400"])
    finally:
        sa.event.remove(sa.engine.Engine, "connect", cap)
    _, err = capsys.readouterr()
    assert rc == 2
    one_clear_line(err, f"results store {db.resolve()}: database or disk is full")
    assert snapshot(paths["root"]) == before


# --- the store API the pages use ---------------------------------------------------------------------------

def _api_cases(paths, ids):
    store = lambda: Store(paths["root"], create=False)  # noqa: E731
    smoke = make_config("smoke")
    return [
        ("get-empty", lambda: store().get_run(""), "an empty run id names no run"),
        ("get-percent", lambda: store().get_run("%"), "no run '%'"),
        ("get-underscore", lambda: store().get_run("_"), "no run '_'"),
        ("get-ambiguous", lambda: store().get_run("plain20-"), "is ambiguous: it matches 2 runs"),
        ("resolve-known-and-unknown", lambda: store().resolve_many([ids["done"], "nope"]), "no run 'nope'"),
        ("cancel-finished", lambda: store().request_cancel(ids["done"]), "only queued or running"),
        ("requeue-finished", lambda: store().requeue(ids["done"]), "is done; only cancelled"),
        ("requeue-no-checkpoint", lambda: store().requeue(ids["nockpt"]), "--from-scratch"),
        ("requeue-planted-code", lambda: store().requeue(ids["evil"], checkpoint_problem=checkpoint_problem),
         "holds objects other than tensors"),
        ("requeue-truncated", lambda: store().requeue(ids["trunc"], checkpoint_problem=checkpoint_problem),
         "is unreadable"),
        ("delete-percent", lambda: store().delete_run("%"), "no run '%'"),
        ("delete-several-without-yes", lambda: store().delete_runs([ids["done"], ids["queued"]]), "needs --yes"),
        ("delete-running", lambda: store().delete_run(ids["running"]), "is running; cancel it first"),
        ("create-invalid-depth", lambda: store().create_runs([replace(smoke, depth=21)]), "depth 21 is not valid"),
        ("create-control-tag", lambda: store().create_runs([replace(smoke, tag="a\x1bb")]), "found U+001B"),
        ("create-huge-seed", lambda: store().create_runs([replace(smoke, seed=10**23)]), "seed must be"),
        ("create-one-bad-of-two", lambda: store().create_runs([smoke, replace(smoke, lr=float("nan"))]), "lr must be"),
        ("create-unknown-status", lambda: store().create_runs([smoke], status="paused"), "unknown status 'paused'"),
        ("runs-unknown-status", lambda: store().runs(status=["bogus"]), "unknown status 'bogus'; statuses:"),
        ("set-unknown-status", lambda: store().set_status(ids["done"], "bogus"), "unknown status 'bogus'"),
        ("artifact-unknown-run", lambda: store().put_artifact("nope", "lesion", {}), "no run 'nope'"),
        ("artifact-long-name", lambda: store().put_artifact(ids["done"], "x" * 65, {}), "must be 1 to 64 characters"),
        ("artifact-nan", lambda: store().put_artifact(ids["done"], "x", {"v": float("nan")}), "numbers must be finite"),
        ("artifact-not-a-dict", lambda: store().put_artifact(ids["done"], "x", [1, 2]), "must be a dict"),
        ("artifact-not-json", lambda: store().put_artifact(ids["done"], "x", {"f": print}), "is not plain JSON"),
        ("open-a-file", lambda: Store(paths["file"]), "is a file, not a folder"),
        ("open-corrupt", lambda: Store(paths["corrupt"]), "file is not a database"),
        ("open-corrupt-readonly", lambda: Store(paths["corrupt"], readonly=True), "file is not a database"),
        ("open-newer", lambda: Store(paths["newer"]), f"schema version {SCHEMA_VERSION + 1}"),
        ("open-missing", lambda: Store(paths["missing"], create=False), "no results store at"),
        ("write-readonly", lambda: Store(paths["root"], readonly=True).update_run(ids["done"], tag="x"), "read-only"),
    ]


API_NAMES = [c[0] for c in _api_cases({"root": None, "file": None, "corrupt": None, "newer": None, "missing": None},
                                      {k: "" for k in ("done", "queued", "nockpt", "evil", "trunc", "running", "fresh")})]


@pytest.mark.parametrize("name", API_NAMES)
def test_store_api_refuses_clearly_and_changes_nothing(lab_store, name):
    paths, ids, marker = lab_store
    _, call, expect = next(c for c in _api_cases(paths, ids) if c[0] == name)
    before = snapshot(*_watched(paths))
    with pytest.raises((StoreError, ConfigError)) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and expect in text, text
    assert snapshot(*_watched(paths)) == before and not marker.exists()


# --- the Launch page: the same inputs, each answered next to its field --------------------------------------

LAUNCH_CASES = [
    # (name, widget kind, key, value, field whose note shows the message, phrase)
    ("depth-invalid", "multiselect", "launch_depths", [20, "21"], "launch_depths", "nearest valid depths: 20 or 26"),
    ("depth-huge", "multiselect", "launch_depths", ["99998"], "launch_depths", "depth must be from 1 to 2000"),
    ("depth-negative", "multiselect", "launch_depths", ["-4"], "launch_depths", "depth must be from 1 to 2000"),
    ("depth-text", "multiselect", "launch_depths", ["abc"], "launch_depths", "depths must be whole numbers"),
    ("depths-empty", "multiselect", "launch_depths", [], "launch_depths", "depths: give at least one"),
    ("kinds-empty", "multiselect", "launch_kinds", [], "launch_kinds", "kinds: give at least one"),
    ("tag-escape-sequence", "text_input", "launch_tag", "\x1b[31mred", "launch_tag", "found U+001B"),
    ("tag-bidi-override", "text_input", "launch_tag", "a\u202eb", "launch_tag", "found U+202E"),
    ("tag-too-long", "text_input", "launch_tag", "x" * 300, "launch_tag", "at most 200 characters"),
    ("batch-over-training-set", "number_input", "launch_batch_size", 20000, "launch_batch_size",
     "larger than the training set"),
    ("iterations-huge", "number_input", "launch_iterations", 10**9, "launch_iterations",
     "iterations must be a whole number from 1 to 10,000,000"),
    ("tag-nul", "text_input", "launch_tag", "a\x00b", "launch_tag", "found U+0000"),
    ("batch-over-limited-set", "number_input", "launch_batch_size", 9001, "launch_batch_size", "use at most 9000"),
]
if not HAS_GPU:
    LAUNCH_CASES.append(("device-cuda-without-gpu", "selectbox", "launch_device", "cuda", "launch_device",
                         "needs a CUDA GPU"))


def _next_to(at, key):
    """The element drawn right after the widget with `key`, in the same container."""
    def walk(node):
        children = list(getattr(node, "children", {}).values())
        for i, child in enumerate(children):
            if getattr(child, "key", None) == key:
                return children[i + 1] if i + 1 < len(children) else None
            found = walk(child)
            if found is not None:
                return found
        return None

    return walk(at._tree)


def test_launch_page_answers_each_bad_input_next_to_its_field(store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: pytest.fail("no worker for bad input"))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.switch_page("pages/launch.py")
    at.run()
    at.selectbox(key="launch_dataset").set_value("synthetic").run()
    defaults = {key: getattr(at, kind)(key=key).value for _, kind, key, *_ in LAUNCH_CASES}
    answered = 0
    for name, kind, key, value, field, phrase in LAUNCH_CASES:
        before = snapshot(store.root)
        getattr(at, kind)(key=key).set_value(value).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        note = _next_to(at, field)
        assert note is not None and type(note).__name__ == "Error", (name, note)
        assert phrase in note.value and "\n" not in note.value, (name, note.value)
        assert next(b for b in at.button if b.label == "Queue runs").disabled, name
        assert snapshot(store.root) == before, name
        answered += 1
        getattr(at, kind)(key=key).set_value(defaults[key]).run()
        assert not at.exception
    assert answered == len(LAUNCH_CASES)
    assert store.runs().empty


def test_the_suite_covers_at_least_sixty_inputs():
    assert len(CLI_CASES) >= 60 and len(API_NAMES) >= 20 and len(LAUNCH_CASES) >= 10
