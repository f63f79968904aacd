"""Downsampled series: what a finished run's summaries hold, when they are made and used, and what the pages
draw from them (lab.buckets, lab/runs/store/summaries.py, lab.run_views)."""
import sqlite3

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lab import run_views
from lab.config import make_config
from lab.fill import simulate_run
from lab.runs.store import Store, summaries_table
from lab.buckets import LAYER_SUMMARY_STEPS, SUMMARY_POINTS, bucket_summary, bucket_width, decimate


def test_buckets_hold_the_mean_min_max_and_count_of_whole_logging_intervals():
    steps = np.arange(10, 20_001, 10)
    values = np.random.default_rng(0).random(len(steps))
    values[[5, 6, 7]] = np.nan
    width = bucket_width(20_000, 10)
    assert width % 10 == 0 and 20_000 / width <= SUMMARY_POINTS
    s = bucket_summary(steps, values, width)
    frame = pd.DataFrame({"b": (steps - 1) // width, "step": steps, "v": values})
    g = frame.groupby("b")
    assert np.allclose(s["x"], g["step"].mean()) and np.allclose(s["mean"], g["v"].mean())
    assert np.allclose(s["min"], g["v"].min()) and np.allclose(s["max"], g["v"].max())
    assert np.array_equal(s["n"], g["v"].count()) and len(s["x"]) == 20_000 // width
    # at most one point a bucket: the series as it is; a bucket of NaNs keeps its place with NaN statistics
    short = bucket_summary([0, 100, 200], [1.0, np.nan, 3.0], 100)
    assert short["x"].tolist() == [0, 100, 200] and np.isnan(short["mean"][1]) and short["n"].tolist() == [1, 0, 1]
    idx = decimate(641)
    assert len(idx) == LAYER_SUMMARY_STEPS and idx[0] == 0 and idx[-1] == 640 and np.all(np.diff(idx) > 0)


def _summary_rows(store, run_id):
    with store.read() as conn:
        return conn.execute(sa.select(summaries_table.c.source, summaries_table.c.name, summaries_table.c.attempt,
                                      summaries_table.c.iteration)
                            .where(summaries_table.c.run_id == run_id)).all()


def test_a_run_is_summarised_when_it_finishes_and_the_curves_draw_the_buckets(db_store):
    rid = simulate_run(db_store, "plain", 20, 0, iterations=20_000, log_every=10, eval_every=1000)
    rows = _summary_rows(db_store, rid)
    assert {(s, n) for s, n, _, _ in rows} >= {("scalar", "train_error"), ("scalar", "test_error"),
                                               ("layer", "grad_norm"), ("layer", "response_std")}
    assert all(it == 20_000 for _, _, _, it in rows)
    runs = db_store.runs()
    drawn = run_views.curve_scalars(db_store, runs, ["train_error", "test_error"])
    raw = db_store.scalars(rid, ["train_error"])
    train = drawn[drawn["name"] == "train_error"]
    width = bucket_width(20_000, 10)
    expected = raw.assign(b=(raw["step"] - 1) // width).groupby("b")
    assert len(train) == 20_000 // width < len(raw)
    assert np.allclose(train["value"], expected["value"].mean()) and np.allclose(train["step"], expected["step"].mean())
    test = drawn[drawn["name"] == "test_error"]  # one evaluation per bucket: the exact points
    assert np.array_equal(test["value"].to_numpy(), db_store.scalars(rid, ["test_error"])["value"].to_numpy())
    # the per-layer series: at most LAYER_SUMMARY_STEPS steps, the first and the last among them
    layers = run_views.layer_series(db_store, runs.iloc[0], "grad_norm")
    steps = sorted(layers["step"].unique())
    assert len(steps) == LAYER_SUMMARY_STEPS and steps[0] == 0 and steps[-1] == 20_000
    full = db_store.layer_series(rid, "grad_norm")
    pd.testing.assert_frame_equal(layers, full[full["step"].isin(steps)].reset_index(drop=True))


def test_a_window_is_read_from_the_rows_in_its_range(store):
    simulate_run(store, "residual", 20, 0, iterations=20_000, log_every=10, eval_every=1000)
    runs = store.runs()
    zoomed = run_views.curve_scalars(store, runs, ["train_error"], window=(5_000, 6_000))
    raw = store.scalars(runs["id"].tolist(), ["train_error"])
    inside = raw[raw["step"].between(5_000, 6_000)]
    assert zoomed["step"].min() >= 5_000 and zoomed["step"].max() <= 6_000
    assert np.array_equal(zoomed["value"].to_numpy(), inside["value"].to_numpy())  # 101 points: every row
    fig = run_views.curves(store, runs, window=(5_000, 6_000))
    xs = np.concatenate([np.asarray(t.x, float) for t in fig.data if "band" not in t.name])
    assert xs.min() >= 5_000 and xs.max() <= 6_000


def test_a_resumed_run_is_never_drawn_from_its_old_summary(store):
    rid = simulate_run(store, "plain", 20, 0, iterations=2_000, log_every=10, eval_every=500)
    store.update_run(rid, status="running", attempt="again", iteration=0)
    store.truncate_after(rid, 100)
    store.log(rid, scalars=[(110, "train_error", 0.5)], iteration=110)
    runs = store.runs()
    live = run_views.curve_scalars(store, runs, ["train_error"])
    assert live["step"].max() == 110  # running: its rows, not the old summary of 2,000 iterations
    store.set_status(rid, "interrupted")
    again = run_views.curve_scalars(store, store.runs(), ["train_error"])
    assert again["step"].max() == 110 and {a for _, _, a, _ in _summary_rows(store, rid)} == {"again"}


def test_an_older_store_upgrades_and_its_runs_are_summarised_when_first_read(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    rid = simulate_run(store, "plain", 20, 0, iterations=1_000, log_every=10, eval_every=500)
    store.close()
    con = sqlite3.connect(root / "lab.db")  # as a store of schema version 3 was: no summaries table
    con.execute("DROP TABLE series_summaries")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(Exception, match="does not upgrade it"):
        Store(root, readonly=True)
    store = Store(root)  # upgrades in place
    assert _summary_rows(store, rid) == []
    drawn = run_views.curve_scalars(store, store.runs(), ["train_error"])
    assert len(drawn) == 100 and {n for _, n, _, _ in _summary_rows(store, rid)} >= {"train_error", "epoch"}
    store.close()
    # a read-only store makes the summary in memory and writes nothing
    with sqlite3.connect(root / "lab.db") as con:
        con.execute("DELETE FROM series_summaries")
    run_views._cache.clear()
    reader = Store(root, readonly=True)
    assert len(run_views.curve_scalars(reader, reader.runs(), ["train_error"])) == 100
    assert _summary_rows(reader, rid) == []


def test_summaries_go_with_their_run(db_store):
    rid = simulate_run(db_store, "plain", 20, 0, iterations=500, log_every=10, eval_every=250)
    (other,) = db_store.create_runs([make_config("smoke")])
    db_store.set_status(other, "cancelled")  # a run that logged nothing is marked summarised all the same
    assert {(s, n) for s, n, _, _ in _summary_rows(db_store, other)} == {("scalar", ""), ("layer", "")}
    assert _summary_rows(db_store, rid)
    db_store.delete_runs([rid, other], yes=True)
    assert _summary_rows(db_store, rid) == [] and _summary_rows(db_store, other) == []


def test_the_curves_page_reads_the_rows_of_a_narrower_range(store):
    import base64
    import json

    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    simulate_run(store, "plain", 20, 0, iterations=20_000, log_every=10, eval_every=1000)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.switch_page("pages/curves.py")
    at.run()

    def array(v):  # plotly's JSON holds numpy arrays as {"dtype", "bdata": base64}
        return np.frombuffer(base64.b64decode(v["bdata"]), v["dtype"]).astype(float) if isinstance(v, dict) \
            else np.asarray(v, float)

    def xs():
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        return np.concatenate([array(t["x"]) for t in spec["data"] if "x" in t])

    whole = xs()
    assert len(whole) < 1000 and whole.max() > 19_000  # the summary: 500 buckets of training error and 20 tests
    at.slider(key="curves_window").set_value((5_000, 6_000)).run()
    assert not at.exception
    zoomed = xs()
    assert zoomed.min() >= 5_000 and zoomed.max() <= 6_000
    assert set(range(5_000, 6_001, 10)) <= set(zoomed.astype(int).tolist())  # every logged step in the range
