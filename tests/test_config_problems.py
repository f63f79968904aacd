"""Configuration problems carry the option they belong to, and list values with an empty item are refused."""
import subprocess
import sys

import pytest

import lab.config
from conftest import ROOT
from lab.cli import main
from lab.config import RunConfig, deepen_config_problems, field_problems, parse_value
from lab.errors import ConfigError
from lab.models import NetSpec, spec_problems


def test_spec_problems_are_pairs_of_field_and_message():
    assert spec_problems(NetSpec()) == []
    assert spec_problems(NetSpec(kind="plain", unit="preact")) == [
        ("unit", "unit 'preact' needs a residual net: without the addition every placement gives the same "
                 "conv-BN-ReLU chain as a plain net with unit 'original' (its plain twin)")]
    assert spec_problems(NetSpec(shortcut="Q")) == [("shortcut", "shortcut 'Q' is not one of A, B, C")]
    assert [f for f, _ in spec_problems(NetSpec(depth=21))] == ["depth"]
    assert [f for f, _ in spec_problems(NetSpec(init="fixup"))] == ["init"]   # norm bn: fixup replaces it
    assert spec_problems(NetSpec(num_classes=1)) == [("", "num_classes 1 must be an integer >= 2")]


@pytest.mark.parametrize("spec", [NetSpec(block="bottleneck", span=2, depth=164),
                                  NetSpec(block="inception", span=2, depth=14),
                                  NetSpec(family="imagenet", depth=18, span=3),
                                  NetSpec(family="imagenet", block="bottleneck", depth=50, span=2)])
def test_a_span_that_does_not_fit_the_unit_is_a_span_problem(spec):
    ((field, msg),) = spec_problems(spec)
    assert field == "span" and "span" in msg


def test_deepen_problems_are_pairs_of_field_and_message():
    assert deepen_config_problems(RunConfig()) == []
    assert deepen_config_problems(RunConfig(deepen_noise=11)) == [
        ("deepen_noise", "deepen_noise must be a number from 0 to 10 (units of the He std), got 11")]
    assert [f for f, _ in deepen_config_problems(RunConfig(deepen_where="middle", deepen_schedule="x"))] == [
        "deepen_where", "deepen_schedule"]
    (pair,) = deepen_config_problems(RunConfig(deepen_from="abc", kind="plain", block="bottleneck", depth=164))
    assert pair[0] == "deepen_from" and pair[1].startswith("deepen_from: a plain bottleneck unit cannot compute")


def test_field_problems_take_the_fields_from_the_pairs():
    assert not hasattr(lab.config, "problem_field")
    problems = field_problems(RunConfig(block="inception", span=2, depth=14, deepen_noise=-1, lr=0))
    assert [f for f, _ in problems] == ["span", "lr", "deepen_noise"]
    # a depth out of range is said once, by the range, not again by the depth rule
    assert [f for f, _ in field_problems(RunConfig(depth=99_999))] == ["depth"]


@pytest.mark.parametrize("text,where", [("0.5,,0.75", "item 2 of 3"), ("0.5,", "after the last comma"),
                                        (",0.5", "item 1 of 2"), ("0.5;;0.75", "item 2 of 3"), (",", "item 1 of 2")])
def test_a_list_value_with_an_empty_item_is_refused(text, where):
    with pytest.raises(ConfigError) as exc:
        parse_value("milestones", text)
    assert str(exc.value) == (f"option milestones: {text!r} has an empty value ({where}); give the values separated "
                              f"by single commas, e.g. 0.5,0.75")


def test_list_values_without_an_empty_item_still_parse():
    assert parse_value("milestones", "0.5, 0.75") == (0.5, 0.75)
    assert parse_value("milestones", "0.5;0.75") == (0.5, 0.75)
    assert parse_value("milestones", "") == () and parse_value("milestones", "  ") == ()
    with pytest.raises(ConfigError, match="is not a valid"):
        parse_value("milestones", "0.5,abc")


def one_line(err: str, expect: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expect in lines[0], lines[0]


@pytest.mark.parametrize("value,where", [("0.5,,0.75", "item 2 of 3"), ("0.5,", "after the last comma")])
def test_the_cli_refuses_an_empty_milestone_in_one_line(value, where, tmp_path, capsys):
    root = tmp_path / "results"
    rc = main(["run", "--preset", "smoke", "--quiet", "--results", str(root), "--milestones", value])
    assert rc == 2
    one_line(capsys.readouterr().err, f"option milestones: {value!r} has an empty value ({where})")
    assert not root.exists()


def test_a_sweep_refuses_an_empty_milestone_in_one_line(tmp_path, capsys):
    root = tmp_path / "results"
    rc = main(["sweep", "--preset", "smoke", "--no-worker", "--results", str(root), "--milestones", "0.5,"])
    assert rc == 2
    one_line(capsys.readouterr().err, "option milestones: '0.5,' has an empty value (after the last comma)")
    assert not root.exists()


def test_the_lab_command_refuses_an_empty_milestone_as_a_real_process(tmp_path):
    root = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--preset", "smoke", "--quiet", "--results", str(root),
                           "--milestones", "0.5,,0.75"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stdout
    one_line(proc.stderr, "option milestones: '0.5,,0.75' has an empty value (item 2 of 3)")
    assert not root.exists()


def test_the_launch_page_shows_spec_and_deepen_problems_under_their_controls(store):
    from test_dashboard import page

    at = page("launch")
    at.selectbox(key="launch_block").set_value("inception").run()
    at.selectbox(key="launch_span").set_value(2).run()
    at.number_input(key="launch_more_quick_deepen_noise").set_value(11.0).run()
    errors = [e.value for e in at.error]
    assert any(e.startswith("an Inception unit has 4 weighted layers") for e in errors), errors
    assert any(e.startswith("deepen_noise must be a number from 0 to 10") for e in errors), errors
    assert "This sweep cannot be queued: see the marked fields above." in errors  # nothing left without a control
    assert next(b for b in at.button if b.label == "Queue runs").disabled


def test_a_depth_that_is_not_a_whole_number_is_one_depth_problem():
    import dataclasses

    from lab.config import field_problems, make_config

    problems = field_problems(dataclasses.replace(make_config("smoke"), depth="x"))
    assert [f for f, _ in problems] == ["depth"] and "got 'x'" in problems[0][1]
