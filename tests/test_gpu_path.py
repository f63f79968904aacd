"""The GPU path, checked on the CPU: RNG restore onto a GPU, the child process without UI libraries, fused SGD and
cuDNN settings only on CUDA, compile modes, the background metrics writer, MPS detection, slot-to-device mapping."""
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from lab.checkpoint import load_checkpoint, restore_rng
from lab.config import COMPILE_MODES, experiment_config, make_config
from lab.models import ConfigError
from lab.runtime import compile_cache_dir, mps_status, use_compile_cache
from lab.train import BackgroundLog, MemoryReporter, Reporter, make_optimizer, train

UI = ("plotly", "streamlit", "kaleido")


# --- correctness -----------------------------------------------------------------------------------------

def test_cuda_rng_state_is_restored_as_a_cpu_byte_tensor(monkeypatch):
    """torch.cuda.set_rng_state wants a CPU ByteTensor; a state that comes back as another dtype (or from another
    device) must be converted, and the CUDA branch must run for a CUDA device."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state, device)))
    cpu = torch.get_rng_state()
    cuda_state = torch.arange(16, dtype=torch.int64)  # not bytes: as if it had been cast on the way
    restore_rng({"cpu": cpu.to(torch.int32), "cuda": cuda_state}, torch.device("cuda:0"))
    (state, device), = calls
    assert state.device.type == "cpu" and state.dtype == torch.uint8 and torch.equal(state, cuda_state.to(torch.uint8))
    assert device == torch.device("cuda:0")
    assert torch.equal(torch.get_rng_state(), cpu)
    calls.clear()
    restore_rng({"cpu": cpu, "cuda": cuda_state}, torch.device("cpu"))  # a GPU checkpoint resumed on the CPU
    assert calls == []


def test_the_worker_child_trains_without_plotly_streamlit_or_kaleido(store):
    """The GPU machine has torch but no UI libraries: `python -m lab _execute` must import and train there. The
    child runs a real run with those imports blocked, and imports none of them."""
    (rid,) = store.create_runs([make_config("smoke", depth=8, width=0.25, iterations=4, log_every=2,
                                            eval_every=4, checkpoint_every=4, train_limit=128, probe_batch=16)])
    attempt = store.claim_next("w")["attempt"]
    code = textwrap.dedent(f"""
        import sys, runpy
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {UI!r}:
                    raise ImportError(f"{{name}} is not installed here")
        sys.meta_path.insert(0, Block())
        import lab.train, lab.runs.execute, lab.runs.worker, lab.__main__
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({UI!r}))
        assert not loaded, loaded
        sys.argv = ["lab", "_execute", {rid!r}, "--attempt", {attempt!r}, "--results", {str(store.root)!r}]
        runpy.run_module("lab", run_name="__main__")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert store.get_run(rid)["status"] == "done"


def test_images_per_second_counts_the_device_work_queued_before_a_checkpoint(tmp_path, monkeypatch):
    """A checkpoint's write is left out of the window's throughput, but the GPU work queued before it is not:
    the trainer syncs the device before starting the checkpoint's clock. A sync that takes 1 s stands for that
    work here (a checkpoint at step 2, inside the window 1..4)."""
    monkeypatch.setattr("lab.train.trainer._sync", lambda device: time.sleep(1.0))
    cfg = make_config("smoke", depth=8, width=0.25, batch_size=8, iterations=4, log_every=4, eval_every=4,
                      checkpoint_every=2, probes=False, train_limit=64)
    rep = MemoryReporter()
    assert train(cfg, tmp_path / "run", rep) == "done"
    (rate,) = [v for s, n, v in rep.scalars if n == "images_per_s"]
    assert 0 < rate <= 4 * 8 / 1.0, rate


def test_fused_sgd_and_cudnn_benchmark_only_on_cuda(tmp_path):
    net = torch.nn.Linear(3, 2)
    cfg = make_config("smoke")
    assert not make_optimizer(net, cfg, torch.device("cpu")).defaults.get("fused")
    rep = MemoryReporter()
    train(make_config("smoke", depth=8, width=0.25, iterations=2, log_every=2, eval_every=2, checkpoint_every=2,
                      train_limit=64, probes=False), tmp_path / "run", rep)
    assert rep.env["fused_sgd"] is False and rep.env["cudnn_benchmark"] is False
    assert rep.env["compile_mode"] is None and rep.env["background_log"] is False


def test_compile_mode_is_validated_and_is_not_part_of_the_experiment():
    assert COMPILE_MODES == ("default", "reduce-overhead", "max-autotune")
    with pytest.raises(ConfigError, match="compile_mode must be one of default, reduce-overhead, max-autotune"):
        make_config("smoke", compile_mode="fast")
    a, b = make_config("smoke"), make_config("smoke", compile=True, compile_mode="reduce-overhead")
    assert experiment_config(a) == experiment_config(b)  # the same experiment, run faster


def test_the_compile_cache_is_the_user_s_own_never_the_results_folder(tmp_path, monkeypatch):
    """Inductor loads pickled graphs and shared objects from its cache: a cache in a (shared, writable) results
    folder would let whoever writes there run code in every compiled run. The cache is per user, 0700."""
    assert compile_cache_dir({}) == Path.home() / ".cache" / "lab" / "compile"
    assert compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "lab" / "compile"
    assert compile_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "lab" / "compile"
    assert compile_cache_dir({"XDG_CACHE_HOME": "/x", "LAB_COMPILE_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # restored after the test
        monkeypatch.setenv(name, str(tmp_path / "unused"))
    cache = tmp_path / "xdg" / "lab" / "compile"
    use_compile_cache(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache / "inductor")
    cache.chmod(0o777)  # one this user made with looser permissions is made private
    use_compile_cache(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # a run's recorded cache is the per-user one, outside its results folder
    monkeypatch.delenv("LAB_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("lab.train.trainer.compile_model", lambda net, cfg, cache: use_compile_cache(cache) or net)
    rep = MemoryReporter()
    cfg = make_config("smoke", depth=8, width=0.25, iterations=2, log_every=2, eval_every=2, checkpoint_every=2,
                      train_limit=64, probe_batch=16, probes=False, compile=True)
    assert train(cfg, tmp_path / "results" / "runs" / "r1", rep) == "done"
    assert rep.env["compile_cache"] == str(cache) and not (tmp_path / "results" / "compile-cache").exists()


# --- the background metrics writer -------------------------------------------------------------------------

class Slow(Reporter):
    """Records calls in order; each log takes a while, as a commit to a busy database does."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at
        self.thread_of_log = set()

    def log(self, step, scalars, layers, progress):
        time.sleep(0.05)
        self.thread_of_log.add(threading.current_thread().name)
        if step == self.fail_at:
            raise RuntimeError(f"store failed at {step}")
        self.calls.append(("log", step))

    def before_checkpoint(self, step):
        self.calls.append(("checkpoint", step))

    def finish(self, status, summary, message):
        self.calls.append(("finish", status))


def test_background_log_writes_in_order_off_the_training_thread_and_finishes_last():
    inner = Slow()
    rep = BackgroundLog(inner)
    t0 = time.perf_counter()
    for step in (1, 2, 3):
        rep.log(step, {"x": 1.0}, {}, {})
    assert time.perf_counter() - t0 < 0.1  # the trainer did not wait for three 50 ms writes
    rep.before_checkpoint(3)
    assert inner.calls == [("log", 1), ("log", 2), ("log", 3), ("checkpoint", 3)]
    rep.log(4, {}, {}, {})
    rep.finish("done", {}, None)
    rep.close()
    assert inner.calls[-2:] == [("log", 4), ("finish", "done")] and inner.thread_of_log == {"metrics-writer"}


def test_background_log_raises_a_writer_error_on_the_training_thread_and_writes_nothing_after():
    inner = Slow(fail_at=2)
    rep = BackgroundLog(inner)
    for step in (1, 2, 3):
        rep.log(step, {}, {}, {})
    with pytest.raises(RuntimeError, match="store failed at 2"):
        rep.flush()
    with pytest.raises(RuntimeError, match="store failed at 2"):
        rep.should_stop()  # the next iteration stops the run
    with pytest.raises(RuntimeError, match="store failed at 2"):
        rep.finish("done", {}, None)
    rep.close()
    assert inner.calls == [("log", 1)]


def test_a_lost_run_stops_before_writing_anything_more_with_background_writes(store):
    """Ownership through the writer thread: at step 6 the run is taken for dead and claimed by another worker.
    The LostRun the next metrics write raises reaches the trainer, which stops: no later metrics, no checkpoint
    and no final status over the new owner's."""
    from lab.runs.execute import StoreReporter
    from lab.runs.store import LostRun

    class Background(StoreReporter):
        background_log = True

    cfg = make_config("smoke", depth=8, width=0.25, iterations=40, log_every=2, eval_every=40, checkpoint_every=4,
                      train_limit=128, probe_batch=16)
    (rid,) = store.create_runs([cfg])
    attempt = store.claim_next("w1")["attempt"]
    taken = {}

    def usurp(step, total):
        if step == 6:
            assert store.set_status(rid, "interrupted", expect=["running"])
            store.requeue(rid)
            taken.update(store.claim_next("another-worker"))

    rep = Background(store, rid, attempt, echo=lambda _: None)
    try:
        with pytest.raises(LostRun):
            train(cfg, store.run_dir(rid), rep, progress=usurp)
    finally:
        rep.close()
    assert store.scalars(rid)["step"].max() <= 6 and load_checkpoint(store.run_dir(rid) / "checkpoint.pt")["step"] == 4
    run = store.get_run(rid)
    assert run["status"] == "running" and run["attempt"] == taken["attempt"] != attempt
    assert run["final_test_error"] is None


def test_background_writes_store_every_window_of_a_run(store):
    from lab.runs.execute import StoreReporter

    class Background(StoreReporter):
        background_log = True

    cfg = make_config("smoke", depth=8, width=0.25, iterations=8, log_every=2, eval_every=4, checkpoint_every=4,
                      train_limit=128, probe_batch=16)
    (rid,) = store.create_runs([cfg])
    rep = Background(store, rid, store.claim_next("w")["attempt"], echo=lambda _: None)
    try:
        assert train(cfg, store.run_dir(rid), rep) == "done"
    finally:
        rep.close()
    assert sorted(set(store.scalars(rid, ["train_error"])["step"])) == [2, 4, 6, 8]
    run = store.get_run(rid)
    assert run["status"] == "done" and run["iteration"] == 8 and run["env"]["background_log"] is True


# --- packing: MPS, slots ---------------------------------------------------------------------------------

def test_mps_is_found_by_its_control_pipe_or_its_process(tmp_path):
    proc = tmp_path / "proc"
    (proc / "17").mkdir(parents=True)
    (proc / "17" / "comm").write_text("python\n")
    off = mps_status({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipes")}, proc)
    assert off["running"] is False and "nvidia-cuda-mps-control -d" in off["how"]
    (tmp_path / "pipes").mkdir()
    (tmp_path / "pipes" / "control").touch()
    assert mps_status({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "pipes")}, proc)["running"] is True
    (proc / "18").mkdir()
    (proc / "18" / "comm").write_text("nvidia-cuda-mps\n")
    found = mps_status({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "none")}, proc)
    assert found["running"] is True and "pid 18" in found["how"]


# --- torch.compile ---------------------------------------------------------------------------------------

def test_a_compiled_run_trains_logs_probes_and_resumes(tmp_path, monkeypatch):
    """compile on (mode default, inductor on the CPU): the compiled module trains, the probe steps run the eager
    net on the same parameters, a stopped run resumes, and the compiled code lands in the user's cache.
    The slowest test here: compiling the forward and backward of even this tiny net took 339 s on the
    development machine with its 2 cores shared by four other test runs (load average 15)."""
    from torch._dynamo.utils import counters

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # restored after the test
        monkeypatch.setenv(name, str(tmp_path / "unused"))
    monkeypatch.delenv("LAB_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = make_config("smoke", depth=8, width=0.25, iterations=8, log_every=2, grad_every=4, eval_every=8,
                      checkpoint_every=4, train_limit=128, probe_batch=16, precision="fp32", compile=True)
    run_dir = tmp_path / "results" / "runs" / "r1"
    counters.clear()
    first = MemoryReporter(stop_at=4)
    assert train(cfg, run_dir, first) == "cancelled"
    assert counters["stats"]["unique_graphs"] >= 1  # the non-probe steps ran the compiled module
    second = MemoryReporter()
    assert train(cfg, run_dir, second) == "done"
    assert second.env["compile_mode"] == "default"
    cache = tmp_path / "xdg" / "lab" / "compile"
    assert second.env["compile_cache"] == str(cache) and any((cache / "inductor").rglob("*.py"))
    steps = [s for s, n, _ in first.scalars + second.scalars if n == "train_error"]
    assert steps == [2, 4, 6, 8]
    grads = {s for s, n, _ in first.layers + second.layers if n == "grad_norm"}
    assert grads == {0, 4, 8}
    assert {n for s, n, _ in second.layers if s == 8} >= {"grad_norm", "response_std"}
    assert all(0 <= v <= 1 for s, n, v in second.scalars if n == "train_error")


def test_the_worker_start_line_says_whether_mps_serves_runs_packed_on_a_gpu(monkeypatch):
    from lab.runs.executors import local

    ex = local.LocalExecutor.__new__(local.LocalExecutor)
    monkeypatch.setattr(local, "mps_status", lambda: {"running": False, "how": "not running; start it with X"})
    ex.plan = local.plan_slots(per_gpu=3, gpus=1)
    assert ex.describe() == "3 slot(s) on cuda:0; CUDA MPS not running; start it with X"
    monkeypatch.setattr(local, "mps_status", lambda: {"running": True, "how": "control pipe"})
    assert ex.describe().endswith("; CUDA MPS running")
    ex.plan = local.plan_slots(per_gpu=1, gpus=2)  # one run per GPU: nothing to share
    assert ex.describe() == "2 slot(s) on cuda:0"
    ex.plan = local.plan_slots(slots=2, device="cpu")
    assert ex.describe() == "2 slot(s) on cpu"


def test_the_launch_page_queues_runs_in_a_compile_mode_for_a_worker_packing_per_gpu(store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    started = []
    monkeypatch.setattr("lab.runs.worker.ensure_worker", lambda *a, **k: started.append(k) or 4242)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=180)
    at.switch_page("pages/launch.py")
    at.run()
    assert at.selectbox(key="launch_compile").value == "off"
    assert at.selectbox(key="launch_compile").options == ["off", "default", "reduce-overhead", "max-autotune"]
    at.multiselect(key="launch_depths").set_value([20])
    at.multiselect(key="launch_kinds").set_value(["residual"])
    at.selectbox(key="launch_dataset").set_value("synthetic")
    at.selectbox(key="launch_compile").set_value("reduce-overhead")
    at.number_input(key="launch_per_gpu").set_value(4)
    at.run()  # one rerun with every value set
    next(b for b in at.button if b.label == "Queue runs").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (rid,) = store.runs()["id"]
    cfg = store.get_run(rid)["config"]
    assert cfg["compile"] is True and cfg["compile_mode"] == "reduce-overhead"
    assert started[-1]["per_gpu"] == 4
