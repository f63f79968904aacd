import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, require_system
from lab import export, run_views
from lab.fill import simulate_run


def need_chromium():
    if export.find_chromium() is None:
        if require_system():
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed")


@pytest.fixture
def filled(store):
    for k in ("plain", "residual"):
        for d in (20, 56):
            simulate_run(store, k, d, 0, iterations=2000, log_every=100, eval_every=500)
    return store


def test_svg_has_the_legend_and_labels(filled):
    need_chromium()
    fig = run_views.depth(filled, filled.runs())
    svg = export.figure_bytes(fig, "svg").decode()
    assert svg.startswith("<svg") and "plain (test)" in svg and "depth (layers)" in svg and "error (%)" in svg


def test_pdf_has_one_page_and_png_is_a_png(filled):
    need_chromium()
    fig = run_views.curves(filled, filled.runs())
    pdf = export.figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1
    png = export.figure_bytes(fig, "png", size="slide", scale=1)
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")
    assert width == 1280


def test_csv_round_trips(filled):
    fig = run_views.curves(filled, filled.runs())
    df = pd.read_csv(io.BytesIO(export.csv_bytes(fig)))
    lines = [t for t in fig.data if t.mode == "lines"]
    for t in lines:
        part = df[df["trace"] == t.name]
        assert part["y"].to_numpy() == pytest.approx(list(t.y))


def test_without_chromium_images_say_what_is_missing_and_csv_html_still_work(filled, monkeypatch):
    monkeypatch.setattr(export, "find_chromium", lambda: None)
    fig = run_views.depth(filled, filled.runs())
    with pytest.raises(export.ExportError, match="apt-get install chromium"):
        export.figure_bytes(fig, "png")
    data, notes = export.report_zip({"depth": fig}, filled.runs())
    assert notes and "Chromium" in notes[0]
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"data/depth.csv", "runs.csv", "index.html", "WARNINGS.txt"} <= set(names)
    assert not any(n.startswith("figures/") for n in names)


def test_report_zip_contents(filled):
    need_chromium()
    figs = {"curves": run_views.curves(filled, filled.runs()), "depth": run_views.depth(filled, filled.runs(), reference=True)}
    data, notes = export.report_zip(figs, filled.runs())
    assert notes == []
    z = zipfile.ZipFile(io.BytesIO(data))
    names = set(z.namelist())
    for name in ("curves", "depth"):
        assert {f"figures/{name}.svg", f"figures/{name}.pdf", f"figures/{name}.png", f"data/{name}.csv"} <= names
    runs = pd.read_csv(z.open("runs.csv"))
    assert len(runs) == 4 and {"id", "kind", "depth", "lr", "final_test_error"} <= set(runs.columns)
    page = z.read("index.html").decode()
    assert "Error vs depth" in page and "figures/depth.svg" in page and "plotly" in page.lower()


def test_cli_export(filled, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lab", "export", "--figures", "depth,curves", "--formats", "csv,html",
                           "--out", str(out), "--results", str(filled.root)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "depth.csv").exists() and (out / "curves.html").exists() and (out / "runs.csv").exists()
    bad = subprocess.run([sys.executable, "-m", "lab", "export", "--figures", "pie", "--results", str(filled.root)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown figure(s) pie" in bad.stderr and "Traceback" not in bad.stderr


def test_runs_csv_neutralises_spreadsheet_formulas(store):
    """Defect 11: a tag starting with '=' landed in runs.csv as a live spreadsheet formula."""
    import csv

    from lab.config import make_config

    tags = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2", "@SUM(A1)", "plain tag"]
    store.create_runs([make_config("smoke", seed=i, tag=t) for i, t in enumerate(tags)])
    for rid in store.runs()["id"]:
        store.update_run(rid, final_test_error=-0.5)  # a negative number stays a number
    data, _ = export.report_zip({}, store.runs(), formats=())
    rows = list(csv.DictReader(io.StringIO(zipfile.ZipFile(io.BytesIO(data)).read("runs.csv").decode())))
    got = {r["tag"] for r in rows}
    assert got == {"'" + t for t in tags[:4]} | {"plain tag"}
    assert {r["final_test_error"] for r in rows} == {"-0.5"}


def test_show_and_ls_escape_control_characters(store, capsys):
    """Defect 11: control characters in stored text printed raw (a terminal escape could clear the screen)."""
    import json

    from lab.__main__ import main
    from lab.config import make_config

    (rid,) = store.create_runs([make_config("smoke")])
    run = store.get_run(rid)
    # written behind the CLI's back (an older lab, a script): the display must still be safe
    store.update_run(rid, tag="\x1b[2Jgone", message="\x1b]0;pwned\x07 and\nmore",
                     config=json.dumps({**run["config"], "tag": "\x1b[2Jgone"}))
    assert main(["show", rid, "--results", str(store.root)]) == 0
    assert main(["ls", "--results", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jgone" in out and "\\x1b]0;pwned\\x07 and\\nmore" in out


FORMULA = '=HYPERLINK("http://evil.example","x")'


def test_study_export_neutralises_formulas_in_runs_csv_and_tables(monkeypatch):
    """The study export's runs.csv and data/table-*.csv went out without csv_safe."""
    from types import SimpleNamespace

    from lab.studies import report

    members = pd.DataFrame([{"id": "plain20-1", "label": "plain-20", "status": "done", "_key": "k", "_seed": 0,
                             "config": {"tag": FORMULA, "depth": 20}}])
    result = SimpleNamespace(figures=dict, data=SimpleNamespace(members=members), to_json=dict,
                             analysis=SimpleNamespace(tables={"finals": pd.DataFrame({"arm": ["+1+1"], "n": [-2]})}))
    monkeypatch.setattr(report, "summary_html", lambda result, images: "")
    files, _ = report.export_files(result, formats=())
    runs = pd.read_csv(io.BytesIO(files["runs.csv"]))
    table = pd.read_csv(io.BytesIO(files["data/table-finals.csv"]))
    assert runs["tag"].tolist() == ["'" + FORMULA] and table["arm"].tolist() == ["'+1+1"]
    assert table["n"].tolist() == [-2]


def test_the_depth_pages_table_csv_neutralises_formulas(filled, monkeypatch):
    from streamlit.runtime import memory_media_file_storage
    from streamlit.testing.v1 import AppTest

    import lab.run_figures

    storages = []

    class Recorded(memory_media_file_storage.MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            storages.append(self)

    monkeypatch.setattr("streamlit.testing.v1.app_test.MemoryMediaFileStorage", Recorded)
    real = lab.run_figures.depth_table
    monkeypatch.setattr(lab.run_figures, "depth_table", lambda runs: real(runs).assign(method=FORMULA))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180)
    at.switch_page("pages/depth.py")
    at.run()
    assert not at.exception
    button = next(e for e in at.get("download_button") if e.proto.label == "Table as CSV")
    content = storages[-1].get_file(button.proto.url.rsplit("/", 1)[-1]).content
    assert set(pd.read_csv(io.BytesIO(content))["method"]) == {"'" + FORMULA}


def test_exports_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failure mid-write leaves the earlier file as it was and no partial file beside it."""
    target = tmp_path / "out" / "runs.csv"
    export.write_atomically(target, b"first\n")
    assert target.read_bytes() == b"first\n"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(export.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export.write_atomically(target, b"second, longer\n")
    assert target.read_bytes() == b"first\n" and sorted(p.name for p in target.parent.iterdir()) == ["runs.csv"]


@pytest.mark.parametrize("out", ["bundle.zip", "folder"])
def test_study_export_writes_through_a_temporary_file(tmp_path, monkeypatch, out):
    from types import SimpleNamespace

    from lab.studies import report

    replaced = []
    real_replace = export.os.replace
    monkeypatch.setattr(export.os, "replace", lambda src, dst: replaced.append(Path(dst).name) or real_replace(src, dst))
    monkeypatch.setattr(report, "export_files", lambda result, formats: ({"runs.csv": b"a\n", "data/x.csv": b"b\n"}, []))
    path, _, _ = report.export(SimpleNamespace(), tmp_path / out)
    assert replaced == (["bundle.zip"] if out.endswith(".zip") else ["runs.csv", "x.csv"])
    assert not [p for p in tmp_path.rglob("*.partial")]
