"""The net2net study compares like with like: the deepened child against the shallow net given the same warm
restart (a child at the parent's depth), and the continued child against the shallow net continued the same way."""
import pytest

from lab.studies import get
from lab.studies.plan import make_plan, queue_missing
from lab.studies.report import evaluate
from study_fakes import fill, noise

PARENT, DEEPENED = "plain-8 (12 it)", "plain-8 → 14 (12 + 12 it)"
RESTARTED, CONTINUED = "plain-8 → 8 (12 + 12 it)", "plain-8 → 8 (12 + 12 it, continued)"
DEEPENED_CONTINUED, SHALLOW = "plain-8 → 14 (12 + 12 it, continued)", "plain-8 (24 it)"


@pytest.fixture
def fast_estimates(monkeypatch):
    monkeypatch.setattr("lab.runs.estimate.measured_gflops", lambda *a, **k: 50.0)


def test_the_controls_restart_or_continue_the_shallow_parent_as_the_deepened_children_do():
    plan = make_plan(get("net2net"), "smoke")
    arms = {pa.name: pa for pa in plan.available()}
    for name, depth, schedule in [(DEEPENED, 14, "restart"), (RESTARTED, 8, "restart"),
                                  (DEEPENED_CONTINUED, 14, "continue"), (CONTINUED, 8, "continue")]:
        assert arms[name].arm.deepen == PARENT
        assert {(c.depth, c.deepen_schedule, c.iterations) for c in arms[name].configs} == {(depth, schedule, 12)}
    # the restarted control is the parent's experiment, grown from the parent: nothing else differs
    parent, control = arms[PARENT].configs[0], arms[RESTARTED].configs[0]
    assert parent == control


def test_the_verdict_compares_the_deepened_net_with_the_shallow_net_restarted_the_same_way(store, fast_estimates):
    """The deepened child is 20 points behind the restarted control but level with the shallow net of one
    schedule: the first verdict is about the control."""
    errors = {DEEPENED: 0.35, RESTARTED: 0.15, SHALLOW: 0.35, DEEPENED_CONTINUED: 0.30, CONTINUED: 0.20}
    fill(store, "net2net", train=lambda arm, seed: errors.get(arm, 0.25) + noise(arm, seed, 0.005))
    result = evaluate("net2net", store, "smoke")
    first, _, continued, restart = result.analysis.findings[:4]
    assert first.outcome == "effect" and first.numbers["a"] == DEEPENED and first.numbers["b"] == RESTARTED
    assert 19 < first.numbers["difference"] < 21 and "same two cycles" in first.question
    assert continued.numbers["a"] == DEEPENED_CONTINUED and continued.numbers["b"] == CONTINUED
    assert 9 < continued.numbers["difference"] < 11
    assert restart.numbers["a"] == RESTARTED and restart.numbers["b"] == SHALLOW
    assert any("only the deepening differs" in note for note in result.analysis.notes)
    assert result.figures()


def test_the_control_children_grow_from_the_parent_arm_s_runs(store, fast_estimates):
    plan = make_plan(get("net2net"), "smoke")
    created = queue_missing(store, plan).created
    runs = store.runs().set_index("id")
    children = {rid: runs.loc[rid, "config"] for rid in created if runs.loc[rid, "config"]["deepen_from"]}
    parents = {rid for rid in created if runs.loc[rid, "config"]["depth"] == 8 and not runs.loc[rid, "config"]["deepen_from"]
               and runs.loc[rid, "config"]["iterations"] == 12}
    assert len(children) == 4 * 2 and {c["deepen_from"] for c in children.values()} == parents
    assert sorted((c["depth"], c["deepen_schedule"]) for c in children.values()) == sorted(
        [(8, "restart"), (14, "restart"), (8, "continue"), (14, "continue")] * 2)
    again = queue_missing(store, plan)
    assert not again.created
