import numpy as np
import pandas as pd
import pytest

from lab import run_figures, run_views
from lab.fill import simulate_run
from lab.reference import CIFAR10_TEST_ERROR
from lab.series import aggregate_seeds, downsample_minmax, ema, mean_sd


@pytest.fixture
def filled(store):
    ids = [simulate_run(store, k, d, s, iterations=4000, log_every=100, eval_every=1000)
           for k in ("plain", "residual") for d in (20, 56) for s in (0, 1, 2)]
    return store, ids


def test_ema_is_debiased_and_skips_nan():
    assert ema(np.array([5.0, 5.0, 5.0]), 0.9) == pytest.approx([5, 5, 5])  # no pull towards 0 at the start
    out = ema(np.array([1.0, np.nan, 3.0]), 0.5)
    assert np.isnan(out[1]) and out[0] == 1 and out[2] == pytest.approx((0.5 * 1 + 3) / 1.5)
    assert np.array_equal(ema(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])


def test_downsampling_keeps_extremes():
    x = np.arange(10000, dtype=float)
    y = np.zeros(10000)
    y[1234], y[8765] = 9.0, -9.0
    xs, (ys,) = downsample_minmax(x, [y], 200)
    assert len(xs) <= 202 and 9.0 in ys and -9.0 in ys and xs[0] == 0 and xs[-1] == 9999


def test_seed_aggregation():
    agg = aggregate_seeds([(np.array([1, 2, 3]), np.array([1.0, 2, 3])), (np.array([1, 2]), np.array([3.0, 6]))])
    assert agg["mean"].tolist() == [2, 4, 3] and agg["min"].tolist() == [1, 2, 3] and agg["max"].tolist() == [3, 6, 3]
    assert agg["sd"].iloc[0] == pytest.approx(np.std([1, 3], ddof=1)) and agg["n"].tolist() == [2, 2, 1]
    assert mean_sd([1.0, 2.0, 3.0, None, float("nan")]) == (2.0, 1.0, 3)


def test_training_curves_traces_axes_and_bands(filled):
    store, _ = filled
    runs = store.runs()
    fig = run_views.curves(store, runs, smoothing=0.5)
    lines = [t for t in fig.data if t.mode == "lines"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(lines) == 8 and len(bands) == 8  # 4 configurations x (train, test), 3 seeds each
    names = {t.name for t in lines}
    assert "plain-56 [simulated] test (mean of 3)" in names and "resnet-20 [simulated] train (mean of 3)" in names
    train = next(t for t in lines if t.name.startswith("plain-20 [simulated] train"))
    test = next(t for t in lines if t.name.startswith("plain-20 [simulated] test"))
    assert train.line.dash == "dash" and test.line.dash == "solid" and test.line.width > train.line.width
    assert train.line.color == test.line.color  # one colour per depth
    assert fig.layout.yaxis.title.text == "error (%)" and fig.layout.xaxis.title.text == "iterations"
    assert {a.text for a in fig.layout.annotations} >= {"plain", "residual (ResNet)"}
    # the band is the seeds' min..max around the mean
    band = next(t for t in bands if t.name.startswith("plain-20 [simulated] train"))
    n = len(train.x)
    upper, lower = np.array(band.y[:n]), np.array(band.y[n:])[::-1]
    assert np.all(upper >= np.array(train.y) - 1e-9) and np.all(lower <= np.array(train.y) + 1e-9)


def test_training_curves_mean_is_the_seed_mean(filled):
    store, _ = filled
    runs = store.runs()
    sel = runs[(runs["kind"] == "plain") & (runs["depth"] == 56)]
    fig = run_views.curves(store, sel, smoothing=0.0, band="none")
    test = next(t for t in fig.data if "test" in t.name)
    sc = store.scalars(sel["id"].tolist(), ["test_error"])
    expect = sc.groupby("step")["value"].mean().to_numpy() * 100
    assert np.allclose(test.y, expect)


@pytest.mark.parametrize("x,title", [("epochs", "epochs"), ("wall time", "wall time (minutes)")])
def test_curves_x_axes(filled, x, title):
    store, _ = filled
    fig = run_views.curves(store, store.runs(), x=x)
    assert fig.layout.xaxis.title.text == title
    assert all(np.isfinite(t.x).all() for t in fig.data if t.mode == "lines")


def test_empty_and_metricless_selections_show_a_message(store):
    assert "No runs selected" in run_figures.training_curves(pd.DataFrame(), pd.DataFrame()).layout.annotations[0].text
    from lab.config import make_config

    store.create_runs([make_config("smoke")])
    fig = run_views.curves(store, store.runs())
    assert "not logged anything" in fig.layout.annotations[0].text
    assert "No finished runs" in run_views.depth(store, store.runs()).layout.annotations[0].text


def test_depth_summary_and_table(filled):
    store, _ = filled
    runs = store.runs()
    table = run_figures.depth_table(runs)
    assert len(table) == 4 and set(table["seeds"]) == {3}
    row = table[(table.kind == "plain") & (table.depth == 56)].iloc[0]
    errs = runs[(runs.kind == "plain") & (runs.depth == 56)]["final_test_error"] * 100
    assert row["test_error_mean"] == pytest.approx(errs.mean()) and row["test_error_sd"] == pytest.approx(errs.std(ddof=1))
    assert row["paper_test_error"] is None or np.isnan(row["paper_test_error"]) or row["kind"] == "residual"
    assert table[(table.kind == "residual") & (table.depth == 56)].iloc[0]["paper_test_error"] == 6.97
    fig = run_views.depth(store, runs)
    assert {t.name for t in fig.data} == {"plain (train)", "plain (test)", "residual (train)", "residual (test)"}
    plain_test = next(t for t in fig.data if t.name == "plain (test)")
    assert list(plain_test.x) == [20, 56] and plain_test.error_y.array is not None


def test_reference_overlay_is_labelled_with_sources(filled):
    store, _ = filled
    fig = run_views.depth(store, store.runs(), reference=True)
    refs = [t for t in fig.data if t.name.startswith("published")]
    sources = {p["source"] for p in CIFAR10_TEST_ERROR}
    assert {t.name.split(": ", 1)[1].rsplit(" (", 1)[0] for t in refs} == sources
    paper = next(t for t in refs if "Table 6" in t.name)
    assert list(paper.y) == [8.75, 7.51, 7.17, 6.97, 6.43, 7.93]
    off = run_views.depth(store, store.runs(), reference=False)
    assert not any(t.name.startswith("published") for t in off.data)


def test_response_profile_and_sorting(filled):
    store, ids = filled
    runs = store.runs()
    sel = runs[runs["depth"] == 20].head(2)
    fig = run_views.responses(store, sel)
    top = [t for t in fig.data if t.xaxis == "x"]
    bottom = [t for t in fig.data if t.xaxis == "x2"]
    assert len(top) == 2 and len(bottom) == 2
    for t, b in zip(top, bottom):
        assert len(t.y) == 19
        assert list(b.y) == sorted(t.y, reverse=True)


def test_gradient_views(filled):
    store, ids = filled
    runs = store.runs()
    sel = runs[(runs["depth"] == 20) & (runs["seed"] == 0)]
    prof = run_views.gradients(store, sel)
    assert len(prof.data) == 2 and all(len(t.y) == 20 for t in prof.data)
    assert prof.layout.yaxis.type == "log"
    ratio = run_views.gradient_ratio(store, sel)
    assert len(ratio.data) == 2
    heat = run_views.gradient_heatmap(store, sel.iloc[0])
    assert heat.data[0].type == "heatmap" and np.asarray(heat.data[0].z).shape == (20, 41)  # step 0 and 40 windows


def test_figure_data_round_trips(filled):
    store, _ = filled
    fig = run_views.depth(store, store.runs())
    df = run_figures.figure_data(fig)
    assert set(df["trace"]) == {t.name for t in fig.data}
    assert len(df) == sum(len(t.x) for t in fig.data)


HOSTILE_TAG = "<a href='http://evil.example'>click</a> %{x} <b>bold"


def test_tags_are_plain_text_in_figures_and_the_html_report(store):
    """Defect 11: a tag holding HTML became a live link in legends, hover labels and the HTML report."""
    from lab.export import report_html

    rid = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200)
    store.update_run(rid, tag=HOSTILE_TAG)
    runs = store.runs()
    fig = run_views.curves(store, runs)
    assert fig.data
    for t in fig.data:
        assert "<a " not in (t.name or "") and "<b>" not in (t.name or "")
        assert "<a " not in (t.hovertemplate or "") and "&#37;{x}" in (t.hovertemplate or "&#37;{x}")
    assert any(HOSTILE_TAG in name for name in run_figures.figure_data(fig)["trace"])  # the CSV has the text back
    page = report_html("report", {"curves": fig}, runs, {})
    assert "<a href='http://evil.example'>" not in page and "evil.example" in page


def test_a_curve_with_one_point_is_drawn_and_an_empty_panel_says_it_waits(store):
    from lab.config import make_config

    simulate_run(store, "plain", 20, 0, iterations=100, log_every=100, eval_every=100)  # one point so far
    store.create_runs([make_config("smoke", kind="residual")])  # queued: nothing logged yet
    fig = run_views.curves(store, store.runs())
    drawn = [t for t in fig.data if t.name and "plain-20" in t.name]
    assert drawn and all(t.mode == "markers" and len(t.x) == 1 for t in drawn)
    assert fig.layout.showlegend  # plotly would hide the legend of a lone trace
    notes = [a.text for a in fig.layout.annotations]
    assert "waiting for data: no residual run has logged errors yet" in notes
    assert not any("plain run" in n for n in notes)


def test_depth_figure_tells_train_from_test(filled):
    store, _ = filled
    fig = run_views.depth(store, store.runs())
    styles = {t.name: (t.line.dash, t.marker.symbol) for t in fig.data}
    assert styles["plain (train)"] == ("dash", "circle-open") and styles["plain (test)"] == ("solid", "circle")
    assert styles["residual (train)"] != styles["residual (test)"]
