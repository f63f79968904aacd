"""The imagenet-degradation study (Fig. 4) at the smoke budget: queued by `study run`, trained on the generated
image folder, a verdict from `study show`, and the same verdict on the Studies page."""
import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from lab.__main__ import main
from lab.runs.execute import execute_run
from lab.runs.store import Store
from lab.studies import get
from lab.studies.plan import make_plan


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_CACHE", str(root.parent / "cache"))
        mp.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)
        assert main(["study", "run", "imagenet-degradation", "--budget", "smoke", "--no-worker",
                     "--results", str(root)]) == 0
        store = Store(root)
        try:
            while (run := store.claim_next("test-imagenet")) is not None:
                execute_run(store, run["id"], handle_signals=False, echo=lambda text: None, attempt=run["attempt"])
        finally:
            torch.set_num_threads(threads)
        yield store


def test_the_smoke_grid_is_the_papers_nets_on_the_generated_folder():
    configs = make_plan(get("imagenet-degradation"), "smoke").configs()
    assert {(c.kind, c.depth, c.block) for c in configs} == {
        ("plain", 18, "basic"), ("plain", 34, "basic"), ("residual", 18, "basic"), ("residual", 34, "basic")}
    assert {(c.family, c.shortcut, c.dataset, c.image_size) for c in configs} == {("imagenet", "B", "imagefolder", 64)}
    paper = make_plan(get("imagenet-degradation"), "paper").configs()
    assert {(c.depth, c.block) for c in paper if c.kind == "residual"} == {(18, "basic"), (34, "basic"),
                                                                            (50, "bottleneck")}


def test_the_study_runs_at_the_smoke_budget_and_gives_a_verdict(trained, capsys):
    store = trained
    runs = store.runs()
    assert len(runs) == 8 and set(runs["status"]) <= {"done", "diverged"}
    capsys.readouterr()
    assert main(["study", "show", "imagenet-degradation", "--budget", "smoke", "--json",
                 "--results", str(store.root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"]["state"] == "done"
    assert data["verdict"]
    questions = [f["question"] for f in data["findings"]]
    assert "Does the plain net train worse as it gets deeper?" in questions
    assert any(f["outcome"] in ("effect", "no clear difference") for f in data["findings"])


def test_the_studies_page_shows_the_verdict(trained, monkeypatch):
    monkeypatch.setenv("LAB_RESULTS", str(trained.root))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.query_params["study"] = "imagenet-degradation"
    at.query_params["budget"] = "smoke"
    at.switch_page("pages/studies.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(str(m.value) for m in at.markdown)
    assert "Degradation on ImageNet nets (Fig. 4)" in " ".join(str(h.value) for h in at.header)
    assert "Does the plain net train worse as it gets deeper?" in shown
    assert "Not enough finished runs yet" not in " ".join(str(i.value) for i in at.info)
