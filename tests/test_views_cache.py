"""The training-curves view reads finished runs' series once and keeps them in memory: what it draws must be
what a full read of the store draws, live runs must stay live, and the fast seed aggregation must give the
statistics of pandas' index alignment."""
import numpy as np
import pandas as pd

from lab import run_figures, run_views
from lab.fill import simulate_run
from lab.series import aggregate_seeds, ema

NAMES = ["train_error", "test_error"]


def _points(fig):
    return [(t.name, np.asarray(t.x, float), np.asarray(t.y, float)) for t in fig.data]


def _same(a, b):
    assert [n for n, _, _ in a] == [n for n, _, _ in b]
    for (name, ax, ay), (_, bx, by) in zip(a, b):
        assert np.array_equal(ax, bx, equal_nan=True) and np.array_equal(ay, by, equal_nan=True), name


def _full_read(store, runs, **kw):
    return run_figures.training_curves(runs, store.scalars(runs["id"].tolist(), NAMES), max_points=60, **kw)


def test_cached_curves_draw_the_points_of_a_full_read_and_live_runs_stay_live(store):
    for seed in (0, 1):
        simulate_run(store, "plain", 20, seed, iterations=3000, log_every=10, eval_every=500)
    live = simulate_run(store, "plain", 20, 2, iterations=3000, log_every=10, eval_every=500, status="running",
                        upto=0.5)
    runs = store.runs()
    # 300 points a run, drawn as at most about 60: the downsampled points are compared too
    for _ in range(2):  # the first call reads the store, the second draws the finished runs from memory
        before = _points(run_views.curves(store, runs, smoothing=0.6, max_points=60))
        _same(before, _points(_full_read(store, runs, smoothing=0.6)))
    store.log(live, scalars=[(1510, "train_error", 0.9), (1520, "train_error", 0.9)], iteration=1520)
    runs = store.runs()
    grown = _points(run_views.curves(store, runs, smoothing=0.6, max_points=60))
    _same(grown, _points(_full_read(store, runs, smoothing=0.6)))
    train = [(x, y) for name, x, y in grown if "train" in name]
    old = [(x, y) for name, x, y in before if "train" in name]
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(train, old))  # the running run's new points count
    # a finished run redone (new attempt, status, iteration) is read again, not drawn from memory
    done = runs[runs["id"] != live]["id"].iloc[0]
    store.update_run(done, status="running", attempt="redo", iteration=0)
    store.truncate_after(done, 100)
    store.update_run(done, status="done", iteration=100)
    runs = store.runs()
    _same(_points(run_views.curves(store, runs, smoothing=0.6, max_points=60)),
          _points(_full_read(store, runs, smoothing=0.6)))


def test_cached_layer_series_are_the_stored_ones_and_live_runs_stay_live(store):
    done = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200)
    live = simulate_run(store, "plain", 20, 1, iterations=400, log_every=100, eval_every=200, status="running",
                        upto=0.5)
    runs = store.runs().set_index("id", drop=False)
    for _ in range(2):
        for rid in (done, live):
            pd.testing.assert_frame_equal(run_views.layer_series(store, runs.loc[rid], "grad_norm"),
                                          store.layer_series(rid, "grad_norm"))
    full = run_figures.gradient_ratio({run_views.run_label(runs.loc[rid]): store.layer_series(rid, "grad_norm")
                                   for rid in runs["id"]})
    _same(_points(run_views.gradient_ratio(store, runs)), _points(full))  # drawn from the first and last layers only
    width = len(store.layer_series(live, "grad_norm")["layer"].unique())
    store.log(live, layers=[(300, "grad_norm", [1.0] * width)], iteration=300)
    runs = store.runs().set_index("id", drop=False)
    assert run_views.layer_series(store, runs.loc[live], "grad_norm")["step"].max() == 300


def test_fast_seed_aggregation_matches_pandas_alignment():
    rng = np.random.default_rng(3)
    same = np.arange(10, 400, 20).astype(float)
    for sizes in ((5, 40, 33, 1), (0, 0, 0)):  # seeds at different steps; seeds at the same steps (0: `same`)
        curves = []
        for n in sizes:
            x = np.sort(rng.choice(np.arange(1, 80), n, replace=False)).astype(float) if n else same
            y = rng.random(len(x))
            y[rng.random(len(x)) < 0.2] = np.nan
            curves.append((x, y))
        _same_statistics_as_pandas(curves)


def _same_statistics_as_pandas(curves):
    table = pd.concat([pd.Series(y, index=x) for x, y in curves], axis=1).sort_index()
    agg = aggregate_seeds(curves)
    assert agg["x"].tolist() == table.index.tolist()
    assert np.allclose(agg["mean"], table.mean(axis=1), equal_nan=True)
    assert np.allclose(agg["sd"], table.std(axis=1, ddof=1).fillna(0))
    assert np.allclose(agg["min"], table.min(axis=1), equal_nan=True)
    assert np.allclose(agg["max"], table.max(axis=1), equal_nan=True)
    assert agg["n"].tolist() == table.notna().sum(axis=1).tolist()
    one = aggregate_seeds(curves[:1])
    assert np.array_equal(one["mean"], curves[0][1], equal_nan=True) and not one["sd"].any()


def test_ema_is_pandas_debiased_ewm_skipping_nans():
    rng = np.random.default_rng(5)
    for weight in (0.3, 0.9, 0.99):
        values = rng.random(300)
        values[rng.random(300) < 0.1] = np.nan
        expect = pd.Series(values).ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean().to_numpy(copy=True)
        expect[np.isnan(values)] = np.nan
        assert np.allclose(ema(values, weight), expect, rtol=1e-12, atol=0, equal_nan=True)
