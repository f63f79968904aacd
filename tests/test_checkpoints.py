"""Checkpoints you can trust: safe loading, exact mid-window resume, a final evaluation after a late crash, RNG
states restored on any device, a failed save that ends the run cleanly, and kill -9 in the middle of a write."""
import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from conftest import ROOT
from lab.__main__ import main
from lab.checkpoint import REQUIRED, CheckpointError, load_checkpoint, restore, rng_state, save_checkpoint
from lab.config import make_config
from lab.fill import simulate_run
from lab.models import build_net
from lab.runs.execute import execute_run
from lab.runs.store import StoreError
from lab.train import MemoryReporter, train


class PlantedCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def claim(store, cfg):
    (rid,) = store.create_runs([cfg])
    return rid, store.claim_next("w")["attempt"]


def test_a_checkpoint_holding_a_pickled_callable_is_refused(store, tmp_path):
    """Defect 3: resume used torch.load(weights_only=False), so a planted checkpoint ran a shell command."""
    marker = tmp_path / "planted-code-ran"
    rid, attempt = claim(store, make_config("smoke"))
    store.run_dir(rid).mkdir(parents=True)
    torch.save({**{k: 0 for k in REQUIRED}, "hook": PlantedCode(marker)}, store.run_dir(rid) / "checkpoint.pt")
    assert execute_run(store, rid, attempt=attempt, handle_signals=False, echo=lambda _: None) == "failed"
    assert not marker.exists()
    run = store.get_run(rid)
    assert run["status"] == "failed" and "holds objects other than tensors and plain data" in run["message"]
    assert "\n" not in run["message"]


def test_the_lab_s_own_checkpoints_load_safely(tmp_path):
    rep = MemoryReporter()
    assert train(make_config("smoke", width=0.25, iterations=12), tmp_path / "run", rep) == "done"
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # weights_only=True
    assert state["step"] == 12 and state["format"] == 2 and state["window"]["seen"] == 0


def test_resume_with_progress_but_no_checkpoint_is_refused_and_from_scratch_keeps_the_metrics_apart(store, capsys):
    """Defect 5: such a resume restarted from iteration 0 and silently dropped the stored metrics."""
    rid = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200, status="interrupted")
    rows = len(store.scalars(rid))
    assert rows > 0
    with pytest.raises(StoreError, match=r"has progress \(iteration 400, \d+ metric values\) but its checkpoint .* is "
                                         r"missing; resume it with --from-scratch"):
        store.requeue(rid)
    assert store.get_run(rid)["status"] == "interrupted" and len(store.scalars(rid)) == rows
    assert main(["resume", rid, "--from-scratch", "--no-worker", "--results", str(store.root)]) == 0
    out = capsys.readouterr().out
    archive = out.split("are in run ")[1].split()[0]
    run, old = store.get_run(rid), store.get_run(archive)
    assert run["status"] == "queued" and run["iteration"] == 0 and store.scalars(rid).empty
    assert len(store.scalars(archive)) == rows and old["iteration"] == 400 and rid in old["message"]
    assert old["config"] == run["config"]


def test_the_trainer_never_starts_over_stored_metrics(store):
    """A run with metrics but no checkpoint reaching a worker anyway fails, keeping its metrics."""
    rid = simulate_run(store, "plain", 20, 0, iterations=400, log_every=100, eval_every=200, status="interrupted",
                       dataset="synthetic")
    rows = len(store.scalars(rid))
    store.set_status(rid, "queued")  # behind the store's back
    attempt = store.claim_next("w")["attempt"]
    assert execute_run(store, rid, attempt=attempt, handle_signals=False, echo=lambda _: None) == "failed"
    assert "no checkpoint to continue from" in store.get_run(rid)["message"] and len(store.scalars(rid)) == rows


class StopAtIteration(MemoryReporter):
    """Asks the trainer to stop before iteration `at` + 1: mid-window when `at` is not a multiple of log_every."""

    def __init__(self, at):
        super().__init__()
        self.at, self.asked = at, 0

    def should_stop(self):
        self.asked += 1
        return self.asked > self.at


def _by_name(reporter):
    out = {}
    for step, name, value in reporter.scalars:
        out.setdefault(name, {})[step] = value
    return out


def test_a_run_stopped_mid_window_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path):
    """Defect 9: the window's sums were lost, so the resumed window logged a loss over fewer batches."""
    cfg = make_config("smoke", kind="plain", depth=20, width=0.25, precision="fp32", grad_every=2)
    ref = MemoryReporter()
    assert train(cfg, tmp_path / "ref", ref) == "done"
    first = StopAtIteration(6)  # the window 5..8 is half done
    assert train(cfg, tmp_path / "cut", first) == "cancelled"
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["window"]["batches"] == 2
    second = MemoryReporter()
    assert train(cfg, tmp_path / "cut", second) == "done"
    a, b = _by_name(ref), {k: {**_by_name(first).get(k, {}), **v} for k, v in _by_name(second).items()}
    for name in ("train_loss", "train_error", "lr", "val_error", "test_error", "test_loss"):
        assert sorted(a[name]) == sorted(b[name]), name
        for step in a[name]:
            assert b[name][step] == pytest.approx(a[name][step], rel=1e-4, abs=1e-6), (name, step)
    grads_a = {s: v for s, n, v in ref.layers if n == "grad_norm"}
    grads_b = {s: v for s, n, v in first.layers + second.layers if n == "grad_norm"}
    assert sorted(grads_a) == sorted(grads_b)
    for step in grads_a:
        assert grads_b[step] == pytest.approx(grads_a[step], rel=1e-4), step
    assert second.summary["final_train_error"] == pytest.approx(ref.summary["final_train_error"], rel=1e-4)


class DieInFinish(MemoryReporter):
    def finish(self, status, summary, message):
        raise RuntimeError("killed after the last checkpoint, before recording the end")


def test_a_run_resumed_at_its_last_iteration_still_does_its_final_evaluation(tmp_path):
    cfg = make_config("smoke", width=0.25, iterations=12)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "run", DieInFinish())
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 12
    again = MemoryReporter()
    assert train(cfg, tmp_path / "run", again) == "done"
    assert again.scalars == []  # nothing to redo: every window was logged
    s = again.summary
    assert s["iteration"] == 12 and 0 <= s["final_val_error"] <= 1 and 0 <= s["final_test_error"] <= 1
    assert 0 <= s["final_train_error"] <= 1


def test_rng_states_are_restored_from_cpu_tensors_whatever_the_training_device(tmp_path):
    """A checkpoint loaded with map_location=device put the RNG states on the GPU, and torch.set_rng_state wants
    a CPU byte tensor. The meta device stands in for a GPU here: restoring onto it must work."""
    net = build_net("residual", 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    torch.manual_seed(123)
    saved = rng_state(torch.device("cpu"))
    expected = torch.rand(3)
    save_checkpoint(tmp_path / "c.pt", {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 7,
                                        "schedule": {"warming": False}, "elapsed_s": 1.0, "rng": saved})
    torch.manual_seed(0)
    meta = build_net("residual", 8).to("meta")
    meta_opt = torch.optim.SGD(meta.parameters(), lr=0.1, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta parameters is a no-op, as torch says
        state = restore(tmp_path / "c.pt", meta, meta_opt, torch.device("meta"))
    assert state["step"] == 7
    assert torch.equal(torch.rand(3), expected)  # the CPU generator continues where it was saved


def test_a_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    net = build_net("residual", 8)
    save_checkpoint(tmp_path / "c.pt", {"model": net.state_dict(), "optimizer": {}, "step": 1, "schedule": {},
                                        "elapsed_s": 0.0, "rng": rng_state(torch.device("cpu"))})
    other = build_net("plain", 20)
    with pytest.raises(CheckpointError, match="does not fit this run's model"):
        restore(tmp_path / "c.pt", other, torch.optim.SGD(other.parameters(), lr=0.1), torch.device("cpu"))


def test_a_failed_checkpoint_save_ends_the_run_failed_and_removes_the_temporary_file(store, monkeypatch):
    """A full disk (ENOSPC) at the second checkpoint: the first stays valid, the run ends failed with the reason."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            with open(f, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr("lab.checkpoint.torch.save", save)
    rid, attempt = claim(store, make_config("smoke", width=0.25))
    assert execute_run(store, rid, attempt=attempt, handle_signals=False, echo=lambda _: None) == "failed"
    run = store.get_run(rid)
    assert run["status"] == "failed"
    assert "checkpoint" in run["message"] and "could not be saved: No space left on device" in run["message"]
    folder = store.run_dir(rid)
    assert not (folder / "checkpoint.pt.tmp").exists()
    assert load_checkpoint(folder / "checkpoint.pt")["step"] == 12
    assert "failed (checkpoint" in run["log_tail"]


# A run whose second checkpoint write stops half-way (the test then kills it with SIGKILL).
KILLED_MID_WRITE = """
import io, sys, time
import torch
from pathlib import Path
real, calls = torch.save, []

def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 2:
        buf = io.BytesIO()
        real(obj, buf)
        with open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
        Path(sys.argv[3]).touch()
        time.sleep(600)
    return real(obj, f, *args, **kwargs)

torch.save = save
from lab.runs.store import Store
from lab.runs.execute import execute_run
execute_run(Store(sys.argv[1]), sys.argv[2], attempt=sys.argv[4])
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_and_resume_works(store, tmp_path):
    cfg = make_config("smoke", precision="fp32", width=0.25)
    rid, attempt = claim(store, cfg)
    writing = tmp_path / "writing"
    # the killed process trains on as many threads as this one, which trains the rest and the reference: the
    # results are compared to 1e-4, and sums over other thread counts round differently
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(store.root), rid, str(writing), attempt],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 300
        while not writing.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the run never reached its second checkpoint"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = store.run_dir(rid)
    assert (folder / "checkpoint.pt.tmp").exists()  # the torn write
    assert load_checkpoint(folder / "checkpoint.pt")["step"] == 12  # the previous checkpoint, intact
    assert store.reap_stale(grace_s=0) == [rid]  # its process is gone
    store.requeue(rid)
    again = store.claim_next("w2")["attempt"]
    assert execute_run(store, rid, attempt=again, handle_signals=False, echo=lambda _: None) == "done"
    ref, ref_attempt = claim(store, cfg)  # the same run, uninterrupted
    assert execute_run(store, ref, attempt=ref_attempt, handle_signals=False, echo=lambda _: None) == "done"
    a, b = store.scalars(ref), store.scalars(rid)
    assert a[["name", "step"]].values.tolist() == b[["name", "step"]].values.tolist()
    for name in ("train_loss", "train_error", "test_error", "lr"):
        assert b[b.name == name]["value"].to_numpy() == pytest.approx(a[a.name == name]["value"].to_numpy(),
                                                                      rel=1e-4, abs=1e-6), name


def test_images_per_second_counts_the_wait_for_the_device(tmp_path, monkeypatch):
    """The window's clock is read after its one host copy (.tolist()), which on a GPU waits for the queued work;
    a copy that takes 1 s here stands for that wait."""
    real = torch.Tensor.tolist

    def slow_tolist(self):
        time.sleep(1.0)
        return real(self)

    monkeypatch.setattr(torch.Tensor, "tolist", slow_tolist)
    cfg = make_config("smoke", depth=8, width=0.25, batch_size=8, iterations=4, log_every=2, eval_every=4,
                      checkpoint_every=4, probes=False, train_limit=64)
    rep = MemoryReporter()
    assert train(cfg, tmp_path / "run", rep, resume=False) == "done"
    rates = [v for s, n, v in rep.scalars if n == "images_per_s"]
    assert rates and all(0 < r <= 2 * 8 / 1.0 for r in rates), rates  # 2 batches of 8 in at least 1 s


def test_grad_norms_are_the_mean_of_the_window_s_samples(tmp_path, monkeypatch):
    """Defect 12: documented as averaged over the window, sampled once when grad_every == log_every."""
    calls = []

    def fake(weights):
        calls.append(len(calls) + 1)
        return torch.full((len(weights),), float(len(calls)))

    monkeypatch.setattr("lab.train.trainer.grad_norms", fake)
    rep = MemoryReporter()
    cfg = make_config("smoke", width=0.25, iterations=8, log_every=4, grad_every=2, eval_every=8, checkpoint_every=8)
    train(cfg, tmp_path / "a", rep, resume=False)
    grads = {s: v[0] for s, n, v in rep.layers if n == "grad_norm" and s > 0}   # step 0: the gradient at init
    assert grads == {4: 1.5, 8: 3.5}  # samples at 2, 4 and at 6, 8
    calls.clear()
    rep = MemoryReporter()
    train(make_config("smoke", width=0.25, iterations=8, log_every=4, grad_every=4, eval_every=8, checkpoint_every=8),
          tmp_path / "b", rep, resume=False)
    assert {s: v[0] for s, n, v in rep.layers if n == "grad_norm" and s > 0} == {4: 1.0, 8: 2.0}  # one sample per window
    from lab.config import RunConfig

    help_text = RunConfig.__dataclass_fields__["grad_every"].metadata["help"]
    assert "mean of its samples" in help_text and "one sample when equal to log_every" in help_text
    docs = "".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert "averaged over the logging window" not in docs and "one sample" in docs


def test_the_trainer_needs_neither_sqlalchemy_nor_plotly():
    code = ("import sys, lab.train, lab.checkpoint; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'plotly', 'pandas', 'streamlit'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "sqlalchemy" not in out.stdout and "plotly" not in out.stdout and "streamlit" not in out.stdout, out.stdout
