"""precision 'auto' on a CPU: bf16 only where torch and oneDNN may use native bf16 instructions."""
import pytest
import torch

from lab.runtime import cpu_has_bf16, resolve_precision


@pytest.fixture(autouse=True)
def fresh_answer():
    """cpu_has_bf16 is asked once per process (the variables are set when the process starts): forget it."""
    cpu_has_bf16.cache_clear()
    yield
    cpu_has_bf16.cache_clear()


def test_an_emulated_avx2_cpu_trains_in_fp32(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_has_bf16()
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert not cpu_has_bf16()


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
