"""Native bf16, asked at run time: torch's own checks also say yes where bf16 is only emulated (a V100 or T4; an
AVX512 CPU without AVX512-BF16), where it trains slower than fp32."""
import pytest
import torch

from mdrn_arch import capabilities
from mdrn_models.models import training_step


@pytest.fixture
def cpu(monkeypatch):
    """Set what this CPU has: ``cpu(avx512_bf16=..., amx=..., flags=...)``."""
    def set_cpu(avx512_bf16=False, amx=False, flags=(), onednn=True):
        monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
        monkeypatch.setattr(capabilities, '_cpu_flags', lambda: set(flags))
        monkeypatch.setattr(capabilities, '_onednn_runs_bf16', lambda: onednn)
    return set_cpu


@pytest.mark.parametrize('kw, native', [
    ({}, False),  # AVX2 only, or AVX512 without its bf16 extension: oneDNN would emulate
    ({'avx512_bf16': True}, True),
    ({'amx': True}, True),
    ({'flags': ['avx2', 'avx_ne_convert']}, True),
    ({'flags': ['fp', 'asimd', 'bf16']}, True),  # Arm
    ({'avx512_bf16': True, 'onednn': False}, False),  # oneDNN limited below it (ONEDNN_MAX_CPU_ISA=AVX2)
])
def test_cpu_native_bf16_counts_bf16_instructions_only(cpu, kw, native):
    cpu(**kw)
    assert capabilities.cpu_has_native_bf16() is native


def test_cpu_native_bf16_is_false_on_an_avx512_cpu_that_onednn_would_emulate_bf16_on(cpu):
    cpu(onednn=True)  # oneDNN's _is_mkldnn_bf16_supported() answers yes on any AVX512 CPU
    assert not capabilities.cpu_has_native_bf16()


@pytest.mark.parametrize('emulated_only', [True, False])
def test_cuda_native_bf16_does_not_count_emulation(monkeypatch, emulated_only):
    """A V100/T4: torch.cuda.is_bf16_supported() is True (emulation), False with including_emulation=False."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda including_emulation=True: including_emulation or not emulated_only)
    assert capabilities.cuda_has_native_bf16() is not emulated_only


@pytest.mark.bad_input
def test_bf16_training_on_a_gpu_that_emulates_it_is_refused_with_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'Tesla V100-SXM2-16GB')
    with pytest.raises(ValueError, match=r'^train.amp: Tesla V100-SXM2-16GB has no native bf16 \(it would emulate it, '
                                         r'slower than fp32\): use train.amp: fp16$'):
        training_step.check_training_step_options({'num_gpu': 1, 'train': {'amp': 'bf16'}})
