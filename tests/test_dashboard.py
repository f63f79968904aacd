"""Every page through Streamlit's AppTest, on an empty store and a populated one."""
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from lab.config import make_config
from lab.fill import simulate_run

PAGES = ["launch", "runs", "curves", "depth", "responses", "gradients", "report"]


def page(name: str, query: dict | None = None) -> AppTest:
    """The page as the app serves it: through dashboard.py's navigation."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def populate(store):
    for kind in ("plain", "residual"):
        for depth in (20, 56):
            for seed in (0, 1):
                simulate_run(store, kind, depth, seed, iterations=2000, log_every=100, eval_every=500)
    simulate_run(store, "plain", 110, 0, iterations=2000, status="diverged")
    simulate_run(store, "residual", 110, 0, iterations=2000, status="running", upto=0.5)
    store.create_runs([make_config("smoke", depth=32)])  # queued, no metrics yet
    return store


@pytest.fixture
def populated(store):
    return populate(store)


@pytest.fixture
def populated_any(db_store):
    """The populated store on each database (SQLite, PostgreSQL): the pages read it through LAB_DB_URL."""
    return populate(db_store)


def texts(at) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "success", "title")
                    for e in getattr(at, kind))


@pytest.mark.parametrize("name", PAGES)
def test_pages_on_an_empty_store(name, store):
    at = page(name)
    if name not in ("launch",):
        assert any(k in texts(at) for k in ("No runs", "No runs selected")), texts(at)


def test_dashboard_entry_runs_the_launch_page(store):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Launch experiments"


def test_launch_validates_inline_and_queues(store, monkeypatch):
    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(1) or 4242)
    at = page("launch")
    assert "4 run(s)" in texts(at)
    at.multiselect(key="launch_depths").set_value([20, "21"]).run()
    assert at.error and "depth 21" in at.error[0].value and "nearest valid depths: 20 or 26" in at.error[0].value
    assert next(b for b in at.button if b.label == "Queue runs").disabled
    assert store.runs().empty
    at.multiselect(key="launch_depths").set_value([20]).run()
    at.selectbox(key="launch_dataset").set_value("synthetic").run()
    queue = next(b for b in at.button if b.label == "Queue runs")
    assert not queue.disabled
    queue.click().run()
    assert not at.exception
    runs = store.runs()
    assert len(runs) == 2 and set(runs["kind"]) == {"plain", "residual"} and set(runs["dataset"]) == {"synthetic"}
    assert started and "Queued 2 run(s)" in at.success[0].value


def test_more_options_reach_the_runs_and_answer_bad_input_next_to_their_field(store, monkeypatch):
    from dataclasses import fields

    from lab.config import RunConfig

    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: 4242)
    at = page("launch")
    shown = {str(w.key)[len("launch_more_quick_"):] for kind in ("selectbox", "checkbox", "number_input", "text_input")
             for w in getattr(at, kind) if str(w.key).startswith("launch_more_quick_")}
    above = {"kind", "depth", "seed", "dataset", "preset", "tag", "shortcut", "block", "span", "init", "norm", "width",
             "iterations", "lr", "batch_size", "precision", "device", "compile", "compile_mode", "threads"}
    assert shown == {f.name for f in fields(RunConfig)} - above  # every option has a control
    assert at.number_input(key="launch_more_quick_eval_every").value == 200  # the preset's value
    assert at.selectbox(key="launch_more_quick_warmup").options == ["auto", "on", "off"]  # a closed set: a menu
    at.multiselect(key="launch_depths").set_value([20]).run()
    at.multiselect(key="launch_kinds").set_value(["residual"]).run()
    at.selectbox(key="launch_dataset").set_value("synthetic").run()
    at.text_input(key="launch_more_quick_milestones").set_value("0.6, x").run()
    assert "milestones" in at.error[0].value and "comma-separated numbers" in at.error[0].value
    assert next(b for b in at.button if b.label == "Queue runs").disabled
    at.text_input(key="launch_more_quick_milestones").set_value("0.6, 0.9").run()
    at.number_input(key="launch_more_quick_scalar_lr").set_value(0.1).run()
    at.selectbox(key="launch_more_quick_unit").set_value("preact").run()
    next(b for b in at.button if b.label == "Queue runs").click().run()
    assert not at.exception
    (cfg,) = store.runs()["config"]
    assert cfg["milestones"] == [0.6, 0.9] and cfg["scalar_lr"] == 0.1 and cfg["unit"] == "preact"
    assert cfg["eval_every"] == 200 and cfg["momentum"] == 0.9  # untouched: the preset's


def test_one_click_presets_fill_the_form(store):
    at = page("launch")
    next(b for b in at.button if b.label == "Figure 6 (paper schedule)").click().run()
    assert at.multiselect(key="launch_depths").value == [20, 32, 44, 56]
    assert at.selectbox(key="launch_preset").value == "paper" and at.selectbox(key="launch_dataset").value == "cifar10"


def test_launch_controls_show_the_chosen_presets_values(store):
    at = page("launch")
    quick, paper = make_config("quick"), make_config("paper")
    for key in ("iterations", "lr", "batch_size", "width"):
        assert at.number_input(key=f"launch_{key}").value == getattr(quick, key), key
    assert at.selectbox(key="launch_dataset").value == quick.dataset
    at.selectbox(key="launch_preset").set_value("paper").run()
    for key in ("iterations", "lr", "batch_size", "width"):
        assert at.number_input(key=f"launch_{key}").value == getattr(paper, key), key
    assert at.selectbox(key="launch_dataset").value == "cifar10" and "256,000 iterations in all" in texts(at)
    at.number_input(key="launch_iterations").set_value(1000).run()   # a change from the preset is an override
    assert "4,000 iterations in all" in texts(at)


def test_launch_shows_the_automatic_runs_at_once_and_the_quick_demos_time_before_it_is_queued(store, monkeypatch):
    from lab.demo import DEMO_SWEEP, demo_configs
    from lab.runs.worker import auto_slots

    monkeypatch.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)
    at = page("launch")
    captions = [c.value for c in at.caption]
    assert at.number_input(key="launch_slots").value == 0
    assert f"Automatic here: {auto_slots('auto', demo_configs())[1]}" in captions
    demo = next(c for c in captions if c.startswith("Quick demo: 4 runs, about **"))
    assert "on this machine" in demo and store.runs().empty
    next(b for b in at.button if b.label == "Quick demo (CPU, minutes)").click().run()
    assert at.multiselect(key="launch_depths").value == DEMO_SWEEP.depths
    assert at.text_input(key="launch_tag").value == DEMO_SWEEP.tag and "4 run(s)" in texts(at)


@pytest.mark.parametrize("name", PAGES)
def test_pages_on_a_populated_store(name, populated_any):
    at = page(name)
    assert not at.error, [e.value for e in at.error]


def test_runs_page_shows_every_status(populated_any):
    at = page("runs")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["done"] == "8" and metrics["diverged"] == "1" and metrics["queued"] == "1" and metrics["running"] == "1"
    assert len(at.dataframe[0].value) == 11


def test_selection_filters_and_goes_into_the_url(populated):
    at = page("curves")
    at.multiselect(key="sel_kind").set_value(["plain"]).run()
    assert not at.exception
    assert at.query_params["kind"] in ("plain", ["plain"])
    assert "5 of 11 runs selected" in " ".join(c.value for c in at.sidebar.caption)  # 4 done + 1 diverged
    # the selection follows the user to another page
    at.switch_page("pages/depth.py").run()
    assert not at.exception and at.multiselect(key="sel_kind").value == ["plain"]


def test_selection_is_restored_from_the_url(populated):
    at = page("depth", {"depth": "56"})
    assert at.multiselect(key="sel_depth").value == [56]


def test_runs_table_shows_a_dash_for_what_queued_runs_have_not_reported(populated):
    at = page("runs")
    table = at.dataframe[0].value
    queued = table[table["status"] == "queued"].iloc[0]
    assert queued["images_per_s"] == "-" and queued["device"] == "-"
    assert "None" not in table[["images_per_s", "device"]].astype(str).to_string()


def test_depth_table_says_not_published_where_the_paper_has_no_number(populated):
    at = page("depth")
    table = next(d.value for d in at.dataframe if "paper_test_error" in d.value.columns)
    paper = dict(zip(zip(table["kind"], table["depth"]), table["paper_test_error"]))
    assert paper[("plain", 20)] == "not published" and paper[("residual", 56)] == "6.97"
    assert "None" not in table["paper_test_error"].astype(str).tolist()
