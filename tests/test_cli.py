"""The `lab` command's structure: shared flags defined once, one error handler, one queue_sweep, the dashboard and
demo commands, the generated reference (docs/cli.md)."""
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT
from lab.cli import build_parser, main
from lab.errors import ExecutorError, LabError
from lab.runs.sweep import MAX_SWEEP_RUNS, SweepSpec, check_sweep, parse_list, queue_sweep, worker_problems


@pytest.fixture
def fast_estimates(monkeypatch):
    monkeypatch.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)


def sources() -> dict:
    files = [*(ROOT / "lab").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "dashboard.py"]
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in files}


def test_shared_flags_are_defined_once_in_the_code_base():
    for flag in ("--results", "--data", "--no-worker", "--slots", "--per-gpu"):
        where = [name for name, text in sources().items() if re.search(rf"add_argument\(\s*\"{flag}\"", text)]
        assert where == ["lab/cli/shared.py"], (flag, where)


def test_every_command_that_opens_the_store_takes_results_with_one_help():
    helps = set()

    def walk(parser, path):
        for action in parser._actions:
            if "--results" in getattr(action, "option_strings", ()):
                helps.add(action.help)
            if isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "lab")
    assert len(helps) == 1


def test_a_lab_error_of_any_kind_is_one_line(monkeypatch, capsys):
    def failing(args):
        raise ExecutorError("no cluster at that address;\nstart one with ray start --head")

    monkeypatch.setattr("lab.cli.tools.cmd_models", failing)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "error: no cluster at that address; start one with ray start --head\n"

    class Unforeseen(LabError):
        pass

    monkeypatch.setattr("lab.cli.tools.cmd_models", lambda args: (_ for _ in ()).throw(Unforeseen("a new kind")))
    assert main(["models"]) == 2 and capsys.readouterr().err == "error: a new kind\n"


def test_help_imports_no_heavy_module():
    code = ("import sys; from lab.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('streamlit', 'plotly', 'scipy', 'lab.train', 'lab.analysis.jobs', "
            "'lab.studies.report', 'lab.export', 'lab.demo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


# --- one queue_sweep ------------------------------------------------------------------------------------------


def test_sweep_problems_are_pairs_with_the_option_at_fault():
    checked = check_sweep(SweepSpec(kinds=[], preset="smoke"), slots=-1, per_gpu=0)
    assert {field for field, _ in checked.problems} == {"kind", "slots", "per_gpu"} and not checked.configs
    checked = check_sweep(SweepSpec(depths=[21], preset="smoke", overrides={"lr": -1.0}))
    assert {field for field, _ in checked.problems} == {"depth", "lr"}
    assert [field for field, _ in worker_problems(-1, 0)] == ["slots", "per_gpu"] and worker_problems(0, 1) == []


def test_queue_sweep_caps_the_runs_and_queues_nothing_when_refused(store):
    huge = SweepSpec(preset="smoke", seeds=list(range(MAX_SWEEP_RUNS // 4 + 1)))
    refused = queue_sweep(store, huge)
    assert refused.problems == [("", f"this sweep would queue {MAX_SWEEP_RUNS + 4:,} runs; a sweep may queue at "
                                     f"most {MAX_SWEEP_RUNS:,}")]
    assert not refused.ids and store.runs().empty
    queued = queue_sweep(store, SweepSpec(preset="smoke", depths=[8]), sweep_id="sweep-x")
    assert len(queued.ids) == 2 and set(store.runs()["sweep_id"]) == {"sweep-x"}


def test_studies_queue_through_queue_sweep(store, monkeypatch):
    from lab.studies.plan import make_plan, queue_missing
    from lab.studies.registry import get

    calls = []
    import lab.runs.sweep as sweep

    real = sweep.queue_sweep
    monkeypatch.setattr(sweep, "queue_sweep", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    created = queue_missing(store, make_plan(get("depth"), "smoke")).created
    assert calls and calls[0] == len(created)


def test_a_grid_with_an_empty_value_is_refused(capsys, tmp_path):
    root = tmp_path / "fresh"
    assert main(["sweep", "--preset", "smoke", "--grid", "lr=0.1,,0.2", "--no-worker", "--results", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--grid lr: '0.1,,0.2' has an empty value between commas" in err and not root.exists()
    with pytest.raises(LabError, match="empty value"):
        parse_list("20,,56", int)
    assert parse_list("20, 56", int) == [20, 56] and parse_list(" ") == [] and parse_list(",,") == []


# --- study show picks the budget with runs ------------------------------------------------------------------


def test_study_show_without_budget_shows_the_budget_that_has_runs(store, capsys, fast_estimates):
    root = str(store.root)
    assert main(["study", "show", "depth", "--results", root]) == 0
    out = capsys.readouterr().out
    assert "cpu budget" in out.splitlines()[0] and "budget:" not in out   # nothing stored: the default, quietly
    assert main(["study", "run", "depth", "--budget", "smoke", "--no-worker", "--results", root]) == 0
    capsys.readouterr()
    assert main(["study", "show", "depth", "--results", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "smoke budget" in lines[0], lines[0]
    assert lines[1] == "budget: smoke, the budget with stored runs (none at the default, cpu); runs stored at: smoke"
    assert "4 queued" in "\n".join(lines)
    assert main(["study", "show", "depth", "--budget", "cpu", "--results", root]) == 0
    assert "cpu budget" in capsys.readouterr().out.splitlines()[0]   # asked for: shown as asked


# --- dashboard and demo ---------------------------------------------------------------------------------------


def test_dashboard_settings_are_make_dashboards(tmp_path, monkeypatch):
    from lab.cli.tools import DASHBOARD_SETTINGS, dashboard_command

    toml = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert DASHBOARD_SETTINGS == {f"{s}.{k}": v for s, options in toml.items() for k, v in options.items()}
    monkeypatch.chdir(tmp_path)   # from any folder
    args = build_parser().parse_args(["dashboard", "--port", "8600", "--results", "here"])
    command, env = dashboard_command(args)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"] and command[4] == str(ROOT / "dashboard.py")
    assert "--server.address=127.0.0.1" in command and "--server.port=8600" in command
    assert "--server.headless=true" in command and "--server.fileWatcherType=none" in command
    assert command[-3:] == ["--", "--results", str(tmp_path / "here")] and env["LAB_RESULTS"] == str(tmp_path / "here")
    assert "LAB_ALLOW_REMOTE" not in env


def test_dashboard_refuses_a_remote_address_unless_allowed(monkeypatch, capsys):
    started = []
    monkeypatch.setattr("subprocess.run",
                        lambda cmd, env: started.append((cmd, env)) or subprocess.CompletedProcess(cmd, 0))
    assert main(["dashboard", "--address", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err and not started
    assert main(["dashboard", "--address", "0.0.0.0", "--allow-remote"]) == 0
    cmd, env = started[0]
    assert "--server.address=0.0.0.0" in cmd and env["LAB_ALLOW_REMOTE"] == "1"
    assert "warning:" in capsys.readouterr().err
    assert main(["dashboard", "--address", "localhost"]) == 0 and "LAB_ALLOW_REMOTE" not in started[1][1]


def test_demo_command_runs_the_demo_with_the_shared_flags(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("lab.demo.run_demo",
                        lambda store, data=None, slots=0: seen.append((store.root.resolve(), data, slots)) or 0)
    assert main(["demo", "--results", str(tmp_path / "r"), "--data", "/d", "--slots", "2"]) == 0
    assert seen == [((tmp_path / "r").resolve(), "/d", 2)]
    assert main(["demo", "--slots", "-1"]) == 2 and len(seen) == 1   # refused before anything starts


# --- the reference ----------------------------------------------------------------------------------------------


def test_docs_cli_md_is_generated_from_the_parser():
    from lab.cli.docs import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: regenerate it with `python -m lab.cli.docs > docs/cli.md`"
    assert "## lab dashboard" in render() and "### lab study show" in render() and "_execute" not in render()
