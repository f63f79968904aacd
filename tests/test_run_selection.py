"""The run list at scale: read once per render (a live fragment that reruns alone reads it afresh), the sidebar's
search, study and sweep selectors (kept in the session and the URL), and the Runs table a page at a time."""
from types import SimpleNamespace

import pandas as pd
import pytest

from lab.config import make_config
from lab.runs.monitor import page_span, selection_mask, sweeps, tagged_studies
from lab.runs.store import Store
from test_dashboard import page

PAGES = ["runs", "curves", "depth", "responses", "gradients", "report", "studies", "inside"]
BULK = 60  # runs of one sweep: more than a table page


def sidebar_text(at) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


def fill(store) -> dict:
    """Runs of four sweeps: a study's (tagged study:degradation), two tagged 'Baseline-Check', BULK more and a
    running one (the newest), so the pages' live views refresh on their own. Returns {name: [ids, newest first]}."""
    study = store.create_runs([make_config("smoke", kind=k, depth=8, seed=0, tag="study:degradation")
                               for k in ("plain", "residual")], sweep_id="sweep-study", status="done")
    base = store.create_runs([make_config("smoke", kind="plain", depth=14, seed=s, tag="Baseline-Check")
                              for s in (0, 1)], sweep_id="sweep-base", status="done")
    bulk = store.create_runs([make_config("smoke", kind="plain", depth=8, seed=s, tag="bulk") for s in range(BULK)],
                             sweep_id="sweep-bulk", status="done")
    (live,) = store.create_runs([make_config("smoke", kind="residual", depth=14, tag="live")], sweep_id="sweep-live",
                                status="running")
    return dict(study=study[::-1], base=base[::-1], bulk=bulk[::-1], live=[live])


@pytest.fixture
def many(store):
    return fill(store)


@pytest.fixture
def many_any(db_store):
    """`many` on each database (SQLite, PostgreSQL): the pages read it through LAB_DB_URL."""
    return fill(db_store)


def count_reads(monkeypatch) -> dict:
    """Counts of the pages' run-list reads (`overview`), of every Store.runs and of Store.reap_stale from now on."""
    import pages.common

    counts = dict(overview=0, runs=0, reap=0)
    overview, runs, reap = pages.common.overview, Store.runs, Store.reap_stale

    def counted(name, fn):
        def call(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(pages.common, "overview", counted("overview", overview))
    monkeypatch.setattr(Store, "runs", counted("runs", runs))
    monkeypatch.setattr(Store, "reap_stale", counted("reap", reap))
    return counts


@pytest.mark.parametrize("name", PAGES)
def test_each_page_reads_the_run_list_once_per_render(name, store, many, monkeypatch):
    at = page(name)  # the first render
    counts = count_reads(monkeypatch)
    at.run()  # a later one: the page and the fragments it runs inline share one read
    assert not at.exception, [e.value for e in at.exception]
    assert counts["overview"] == 1 and counts["reap"] <= 1, counts
    if name != "studies":  # the studies' estimates read the finished runs themselves
        assert counts["runs"] == 1, counts
    before = counts["overview"]
    store.create_runs([make_config("smoke", depth=8, tag="new")])
    at.run()  # the next render reads the list again, and shows the new run
    assert counts["overview"] == before + 1 and not at.exception
    if name == "runs":
        assert {m.label: m.value for m in at.metric}["queued"] == "1"


def test_a_fragment_that_reruns_alone_reads_the_run_list_afresh(store, monkeypatch):
    """Streamlit starts every script run, and every fragment that reruns on its own, with a new table of cursors:
    one read per such run, a new read in the next, and a read per call outside a script run (a download)."""
    import pages.common

    render = SimpleNamespace(cursors={})
    monkeypatch.setattr(pages.common, "get_script_run_ctx", lambda **_: render)
    monkeypatch.setattr(pages.common, "st", SimpleNamespace(session_state={}))
    counts = count_reads(monkeypatch)
    first = pages.common.run_list(store)
    assert pages.common.run_list(store) is first and counts["overview"] == 1   # the page and its inline fragments
    store.create_runs([make_config("smoke", depth=8)])
    render.cursors = {}   # the live fragment reruns alone
    fresh = pages.common.run_list(store)
    assert counts["overview"] == 2 and len(fresh) == 1 and pages.common.run_list(store) is fresh
    monkeypatch.setattr(pages.common, "get_script_run_ctx", lambda **_: None)
    pages.common.run_list(store)
    pages.common.run_list(store)
    assert counts["overview"] == 4


def test_search_matches_tag_or_label_in_any_case_and_goes_into_the_url(many):
    at = page("runs")
    total = 2 + 2 + BULK + 1
    assert f"{total} of {total} runs selected" in sidebar_text(at)
    at.text_input(key="sel_search").set_value("baseline").run()
    assert not at.exception
    assert "2 of" in sidebar_text(at) and sorted(at.dataframe[0].value["id"]) == sorted(many["base"])
    assert at.query_params["search"] in ("baseline", ["baseline"])
    at.text_input(key="sel_search").set_value("RESNET").run()   # the label resnet-8 / resnet-14
    assert sorted(at.dataframe[0].value["id"]) == sorted([many["study"][0], many["live"][0]])
    # the runs one can act on are the selected ones
    assert {o.split(" - ")[0] for o in at.selectbox(key="runs_pick").options} == {many["study"][0], many["live"][0]}


def test_study_and_sweep_selectors_filter_and_follow_the_user_to_another_page(many_any):
    many = many_any
    at = page("runs")
    assert at.multiselect(key="sel_in_study").options == ["degradation"]
    at.multiselect(key="sel_in_study").set_value(["degradation"]).run()
    assert sorted(at.dataframe[0].value["id"]) == sorted(many["study"])
    assert at.query_params["in_study"] in ("degradation", ["degradation"])
    at.multiselect(key="sel_in_study").set_value([]).run()
    sweep = at.multiselect(key="sel_sweep_id")
    assert sweep.options[0].startswith("sweep-live (1 run)")   # the newest run's sweep first, with its size
    sweep.set_value(["sweep-base"]).run()
    assert sorted(at.dataframe[0].value["id"]) == sorted(many["base"]) and "2 of" in sidebar_text(at)
    at.switch_page("pages/depth.py").run()
    assert not at.exception and at.multiselect(key="sel_sweep_id").value == ["sweep-base"]
    assert "2 of" in sidebar_text(at)


def test_the_selection_is_restored_from_the_url(many):
    at = page("runs", {"search": "BULK", "sweep_id": "sweep-bulk,sweep-study", "in_study": "degradation"})
    assert at.text_input(key="sel_search").value == "BULK"
    assert at.multiselect(key="sel_sweep_id").value == ["sweep-bulk", "sweep-study"]
    assert at.multiselect(key="sel_in_study").value == ["degradation"]
    assert "0 of" in sidebar_text(at)   # tagged bulk, not by the study
    at.button(key="sel_clear").click().run()
    assert at.text_input(key="sel_search").value == "" and at.multiselect(key="sel_in_study").value == []
    assert "65 of 65" in sidebar_text(at) and not dict(at.query_params)


def test_the_runs_table_shows_a_page_at_a_time(many_any):
    many = many_any
    at = page("runs")
    newest = many["live"] + many["bulk"] + many["base"] + many["study"]
    assert list(at.dataframe[0].value["id"]) == newest[:50]
    assert "runs 1-50 of 65" in " ".join(c.value for c in at.caption)
    at.number_input(key="runs_page").set_value(2).run()
    assert not at.exception and list(at.dataframe[0].value["id"]) == newest[50:]
    assert "runs 51-65 of 65" in " ".join(c.value for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}   # the counts are of the whole selection
    assert metrics["done"] == "64" and metrics["running"] == "1"
    at.text_input(key="sel_search").set_value("baseline").run()   # fewer runs: one page, no page control
    assert list(at.dataframe[0].value["id"]) == many["base"] and not at.number_input


def test_selection_helpers():
    runs = pd.DataFrame(dict(id=["a", "b", "c", "d"], tag=["study:x", "Study:y", None, "study:"],
                             label=["plain-8", "resnet-8", "plain-14 [base]", None], depth=[8, 8, 14, 8],
                             sweep_id=["s2", "s1", "s2", None]))
    assert tagged_studies(runs, "study:") == ["x"]
    assert sweeps(runs) == {"s2": 2, "s1": 1}

    def picked(**kwargs):
        return list(runs["id"][selection_mask(runs, study_prefix="study:", **kwargs)])

    assert picked(fields={"depth": ["8"]}) == ["a", "b", "d"]
    assert picked(fields={"depth": [8], "sweep_id": ["s2"]}) == ["a"]
    assert picked(fields={}, search="STUDY") == ["a", "b", "d"] and picked(fields={}, search="base") == ["c"]
    assert picked(fields={}, search="  ") == ["a", "b", "c", "d"]
    assert picked(fields={"missing": ["1"]}, studies=["x"]) == ["a"]
    assert page_span(65, 2, 50) == (50, 65, 2) and page_span(65, 9, 50) == (50, 65, 2)
    assert page_span(0, 1, 50) == (0, 0, 1) and page_span(50, 0, 50) == (0, 50, 1)


def test_the_study_tag_is_the_one_studies_give_their_runs():
    from lab.studies.plan import study_tag
    from pages.common import STUDY_TAG

    assert study_tag("degradation") == STUDY_TAG + "degradation"
