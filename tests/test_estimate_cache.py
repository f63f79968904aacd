"""A quick measurement of the machine (lab.runs.estimate.measured_gflops) is kept for a week in the user's cache,
so a restarted dashboard's first Studies or Launch page does not measure again."""
import json
import time

from lab.runs import estimate


def test_a_measurement_is_kept_reused_and_taken_again_when_old_or_unreadable(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(estimate, "_measure_gflops", lambda *a: measured.append(a) or 42.0)

    def fresh():  # as a new process would
        estimate.measured_gflops.cache_clear()
        return estimate.measured_gflops(width=0.5, threads=1, precision="fp32")

    assert fresh() == 42.0 and fresh() == 42.0 and len(measured) == 1
    path = estimate.kept_file("measured-gflops")
    assert path.parent == tmp_path / "lab" and (path.parent.stat().st_mode & 0o777) == 0o700
    data = json.loads(path.read_text())
    (key,) = data
    data[key][1] = time.time() - estimate.KEPT_S - 1  # a week old: measured again
    path.write_text(json.dumps(data))
    assert fresh() == 42.0 and len(measured) == 2
    path.write_text("{not json")  # unreadable: measured again, and the file made whole
    assert fresh() == 42.0 and len(measured) == 3 and len(json.loads(path.read_text())) == 1
    estimate.measured_gflops(width=1.0, threads=1, precision="fp32")  # other arguments: their own entry
    assert len(measured) == 4 and len(json.loads(path.read_text())) == 2
    estimate.measured_gflops.cache_clear()


def test_a_networks_multiply_adds_are_counted_once_per_network_code(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    counted = []
    real = estimate.forward_macs
    monkeypatch.setattr(estimate, "forward_macs", lambda net, size: counted.append(size) or real(net, size))
    args = (20, "basic", 0.5, 2, 3, 32)
    estimate.run_macs.cache_clear()
    first = estimate.run_macs(*args)
    estimate.run_macs.cache_clear()
    assert estimate.run_macs(*args) == first == 10_248_512 and len(counted) == 1
    estimate.run_macs.cache_clear()
    estimate._models_fingerprint.cache_clear()
    monkeypatch.setattr(estimate, "_models_fingerprint", lambda: "other network code")
    assert estimate.run_macs(*args) == first and len(counted) == 2
    estimate.run_macs.cache_clear()
