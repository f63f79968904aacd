"""`lab bench`: its ceiling in the lab's training precision, its table, and a whole run at tiny sizes."""
import json
from argparse import Namespace

import pytest
import torch

from lab import bench, runtime


def test_the_ceiling_is_measured_in_the_training_precision():
    assert bench.ceiling_dtype("fp32") is torch.float32
    assert bench.ceiling_dtype("bf16") is torch.bfloat16


def test_table_shows_gflops_the_fraction_of_the_ceiling_and_the_ratio_to_the_reference_side_by_side():
    row = dict(depth=20, a=300.0, b=310.0, c=200.0, a_over_c=1.5, a_over_b=300 / 310, gflops=75.0, ceiling=150.0,
               fraction=0.5, precision="fp32")
    header, line, targets = bench.table([row])
    assert "a/c" in header and "GFLOP/s" in header and "of ceiling" in header
    assert line.split() == ["resnet20", "300", "310", "200", "1.50", "0.968", "75.0", "50.0%"]
    assert "(fp32): a/c >= 1.5" in targets
    assert "(bf16): a/c >= 2" in bench.table([row | dict(precision="bf16")])[-1]


@pytest.fixture
def tiny(monkeypatch):
    """A whole bench at tiny sizes: a small generated data set and matrix multiply, recording the ceiling's dtype."""
    monkeypatch.setattr(bench, "BENCH_TRAIN_IMAGES", 400)
    monkeypatch.setattr(bench, "BENCH_TEST_IMAGES", 40)
    dtypes = []
    real = bench.matmul_ceiling

    def small_ceiling(device, dtype=torch.bfloat16, n=0, repeat=0):
        dtypes.append(dtype)
        return real(device, dtype, n=64, repeat=2)

    monkeypatch.setattr(bench, "matmul_ceiling", small_ceiling)
    return dtypes


def test_on_a_cpu_without_native_bf16_the_bench_measures_fp32_and_prints_fraction_and_ratio(tiny, monkeypatch,
                                                                                           capsys):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    args = Namespace(threads=1, device="cpu", iterations=2, repeats=1, depths="8", modes="off", packed="0",
                     sweep=False, gpu_sweep=False, warmup=1, batch_size=8, json=True)
    assert bench.main(args) == 0
    assert tiny == [torch.float32]
    out = capsys.readouterr().out
    assert "lab precision fp32" in out and "measured fp32 matrix-multiply ceiling" in out
    (row,) = json.loads(out.strip().splitlines()[-1])
    assert row["precision"] == "fp32" and row["a_over_c"] == pytest.approx(row["a"] / row["c"])
    assert row["fraction"] == pytest.approx(row["gflops"] / row["ceiling"]) and row["gflops"] > 0
    assert "targets (fp32): a/c >= 1.5" in out


class Measured(Exception):
    """Raised in place of the per-depth measurements: the ceiling comes first."""


def test_a_precision_given_to_the_bench_sets_its_ceiling(tiny, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(bench, "write_cifar10_format", lambda root, *a: root)

    def measured(*args, **kwargs):
        raise Measured

    monkeypatch.setattr(bench, "measure_depth", measured)
    args = Namespace(threads=1, device="cpu", iterations=2, repeats=1, depths="8", sweep=False, gpu_sweep=False,
                     warmup=1, batch_size=8, precision="fp32")
    with pytest.raises(Measured):
        bench.main(args)
    assert tiny == [torch.float32]
    tiny.clear()
    args.precision = None   # the lab's choice: bf16 on a CPU with native bf16
    with pytest.raises(Measured):
        bench.main(args)
    assert tiny == [torch.bfloat16]
