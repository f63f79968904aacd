"""Analysis figures, named analysis views and the "Inside trained nets" page, on results computed by the real
analyses on tiny untrained nets (no training needed to draw them)."""
import math

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from lab.analysis import result_figures, save_result
from lab.analysis.restored import checkpoint_path
from lab.analysis.landscape import landscape
from lab.analysis.lesion import lesion
from lab.analysis.shatter import shatter
from lab.analysis.result_views import FIGURES, build, command
from lab.run_figures import figure_data
from lab.fill import simulate_run
from lab.models import build_net


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets: one thread is as fast as two, and far faster on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def analyse(kind: str, depth: int, seed: int = 0, run_id: str | None = None) -> dict[str, dict]:
    """Every stored result kind for a tiny random net, as `run_analysis` would store them."""
    torch.manual_seed(seed)
    net = build_net(kind, depth, width=0.25).eval()
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    run = dict(run_id=run_id or f"{kind}{depth}-{seed}", label=f"{'resnet' if kind == 'residual' else 'plain'}-{depth}",
               kind=kind, depth=depth, dataset="synthetic", seed=seed, preset="smoke", at="checkpoint", step=24,
               total_iterations=24, device="cpu", precision="fp32")
    out = {
        "lesion": lesion(net, x, y, draws=1, reorder=True),
        "landscape": landscape(net, x, y, points=5, span=0.5),
        "landscape-2d": landscape(net, x, y, points=3, span=0.5, two_d=True),
        "shatter": shatter(net, x[0], x[1] - x[0], points=32, target="loss", label=int(y[0])),
        "shatter-init": shatter(net, x[0], x[1] - x[0], points=32, target="loss", label=int(y[0])),
    }
    for name, result in out.items():
        result["run"] = dict(run, at="init", step=0) if name == "shatter-init" else run
        result["bn_statistics"] = "recalibrated" if name == "shatter-init" else "running"
    return out


@pytest.fixture(scope="module")
def nets():
    return {(k, d): analyse(k, d) for k in ("plain", "residual") for d in (8, 14)}


def test_lesion_figures_hold_the_plotted_numbers(nets):
    results = [nets[("plain", 14)]["lesion"], nets[("residual", 14)]["lesion"]]
    fig = result_figures.lesion_units(results)
    assert {a.text for a in fig.layout.annotations} >= {"plain", "residual (ResNet)"}
    assert [t.name for t in fig.data] == ["plain-14", "plain-14: nothing deleted", "resnet-14",
                                          "resnet-14: downsampling units", "resnet-14: nothing deleted"]
    plain, res = results
    assert list(fig.data[0].x) == [1, 2, 4, 6]  # units 3 and 5 change the shape: not deletable, left out
    assert list(fig.data[0].y) == pytest.approx([100 * e for e in plain["single"]["error"] if e is not None])
    assert "units 3, 5 change the shape" in fig.layout.annotations[-1].text
    # the ResNet's two kinds of unit are drawn apart: shape-keeping as the line, downsampling as diamonds
    assert list(fig.data[2].x) == [1, 2, 4, 6] and list(fig.data[3].x) == [3, 5]
    assert list(fig.data[3].y) == pytest.approx([100 * res["single"]["error"][i] for i in (2, 4)])
    assert fig.data[3].marker.symbol == "diamond-open"
    data = figure_data(fig)
    assert len(data[data["trace"] == "resnet-14"]) == 4

    fig = result_figures.lesion_deleted(results)
    assert list(fig.data[1].x) == [0, 1, 2, 3, 4] and "shape-keeping" in fig.layout.title.text
    assert fig.data[1].y[0] == pytest.approx(100 * res["baseline"]["error"])
    assert "error" in figure_data(fig).columns
    fig = result_figures.lesion_reordered(results)
    assert len(fig.data) == 2 and fig.data[0].x[0] == 1.0


def test_landscape_figures(nets):
    runs = [nets[(k, d)] for k in ("plain", "residual") for d in (8, 14)]
    fig = result_figures.landscape_1d([r["landscape"] for r in runs])
    assert len(fig.data) == 8 and fig.data[0].line.dash == "dash" and fig.data[-1].line.dash == "solid"
    assert list(fig.data[0].y) == runs[0]["landscape"]["loss"] and fig.layout.yaxis.type == "log"
    fig = result_figures.landscape_2d([r["landscape-2d"] for r in runs])
    contours = [t for t in fig.data if t.type == "contour"]
    assert [t.name for t in contours] == ["plain-8 log10 loss", "plain-14 log10 loss", "resnet-8 log10 loss",
                                          "resnet-14 log10 loss"]
    data = figure_data(fig)
    cells = data[data["trace"] == "plain-8 log10 loss"]
    assert len(cells) == 9
    grid = runs[0]["landscape-2d"]["loss"]
    assert sorted(cells["z"]) == pytest.approx(sorted(math.log10(v) for row in grid for v in row))
    # the landscape figure never draws 2-D results as curves, nor the other way round
    assert result_figures.landscape_1d([r["landscape-2d"] for r in runs]).layout.annotations[0].text.startswith("No 1-D")


def test_shattering_figures(nets):
    runs = [nets[(k, d)] for k in ("plain", "residual") for d in (8, 14)]
    results = [r["shatter"] for r in runs] + [r["shatter-init"] for r in runs]
    fig = result_figures.shatter_distance(results)
    assert len(fig.data) == 10 and fig.layout.xaxis.type == "log"
    dashes = {t.name: t.line.dash for t in fig.data}
    assert dashes["plain-8 at init"] == "dot" and dashes["plain-8"] == "solid"
    # Balduzzi et al.'s references: white noise (0 everywhere) and Brownian-motion gradients (a random walk)
    white, brown = fig.data[-1], fig.data[-2]
    assert white.name.startswith("white noise") and set(white.y) == {0.0}
    assert brown.name.startswith("Brownian-motion gradients") and brown.y[0] == pytest.approx(0.9, abs=0.1)
    assert all(a > b for a, b in zip(brown.y[:20], brown.y[1:20]))   # it decorrelates slowly with distance
    assert "at init: BN running statistics recalibrated" in fig.layout.annotations[0].text
    fig = result_figures.shatter_depth(results)
    assert [t.name for t in fig.data] == ["plain at init, BN recalibrated", "plain trained",
                                          "residual at init, BN recalibrated", "residual trained",
                                          "∝ 1/√L (Balduzzi et al., residual with BN)"]
    trained = fig.data[1]
    assert list(trained.x) == [8, 14]
    assert list(trained.y) == pytest.approx([nets[("plain", d)]["shatter"]["summary"]["correlation"] for d in (8, 14)])
    law = fig.data[-1]
    assert list(law.y) == pytest.approx([fig.data[2].y[0], fig.data[2].y[0] * math.sqrt(8 / 14)])
    assert len(figure_data(fig)) == 10


def test_shattering_figures_say_which_bn_statistics(nets):
    """Results at init made with a fresh net's (0, 1) BN statistics (or by a lab that did not record them) are
    named so and never averaged with recalibrated ones."""
    new = nets[("plain", 8)]["shatter-init"]
    old = {k: v for k, v in nets[("plain", 14)]["shatter-init"].items() if k != "bn_statistics"}
    fig = result_figures.shatter_depth([new, old])
    assert [t.name for t in fig.data] == ["plain at init, BN recalibrated", "plain at init, BN (0, 1): the identity"]
    note = fig.layout.annotations[0].text
    assert "recalibrated on training batches" in note and "(0, 1), so every BN is the identity" in note
    fig = result_figures.shatter_distance([new, old])
    assert [t.name for t in fig.data[:2]] == ["plain-8", "plain-14 (BN (0, 1): the identity)"]


@pytest.mark.parametrize("builder", [result_figures.lesion_units, result_figures.lesion_deleted, result_figures.lesion_reordered,
                                     result_figures.landscape_1d, result_figures.landscape_2d, result_figures.shatter_distance,
                                     result_figures.shatter_depth])
def test_no_results_gives_a_figure_that_says_how_to_get_them(builder):
    fig = builder([])
    assert len(fig.data) == 0 and "python -m lab" in fig.layout.annotations[0].text


def test_labels_tell_seeds_and_init_apart(nets):
    a = nets[("plain", 8)]["shatter"]
    b = dict(a, run=dict(a["run"], seed=1, run_id="other"))
    c = nets[("plain", 8)]["shatter-init"]
    assert result_figures.labels([a, b, c]) == ["plain-8 seed 0", "plain-8 seed 1", "plain-8 seed 0 at init"]


@pytest.fixture
def populated(store, nets):
    """Two simulated runs, one with every result stored and a checkpoint file, one with a checkpoint only."""
    ids = [simulate_run(store, kind, 14, 0, iterations=200, log_every=50, eval_every=100)
           for kind in ("plain", "residual")]
    for rid in ids:
        checkpoint_path(store, rid).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(store, rid).write_bytes(b"")  # the page only asks whether there is one
    for name, result in analyse("plain", 14, run_id=ids[0]).items():
        save_result(store, ids[0], name, result)
    return store, ids


def test_named_views_build_from_stored_results(populated):
    store, ids = populated
    runs = store.runs()
    for name in FIGURES:
        fig = build(name, store, runs)
        assert fig.data, name
        references = ("white noise", "Brownian-motion", "∝ 1/√L")   # Balduzzi et al.'s, in the shattering figures
        assert all(t.name.startswith(("plain-14", "plain ") + references) for t in fig.data), name
    assert command("shatter-init", ids[1], store.root) == f"python -m lab shatter {ids[1]} --at init"
    assert command("landscape-2d", "x", "/somewhere else") == "python -m lab landscape x --2d --results '/somewhere else'"


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.switch_page("pages/inside.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_inside_page_on_an_empty_store(store):
    at = page()
    assert "No runs selected" in " ".join(i.value for i in at.info)


def test_inside_page_shows_stored_results_and_commands_for_missing_ones(populated):
    store, ids = populated
    at = page()
    assert at.title[0].value == "Inside trained nets" and not at.error
    assert at.multiselect(key="inside_runs").value == [ids[0]]  # runs with results are picked first
    charts = at.get("plotly_chart")
    assert len(charts) == len(FIGURES)
    assert not [c for c in at.code if ids[0] in c.value]  # everything is there for the run with results
    at.multiselect(key="inside_runs").set_value(ids).run()
    assert not at.exception
    commands = "\n".join(c.value for c in at.code)
    assert f"python -m lab lesion {ids[1]}" in commands and f"python -m lab landscape {ids[1]} --2d" in commands
    assert f"python -m lab shatter {ids[1]} --at init" in commands and ids[0] not in commands
