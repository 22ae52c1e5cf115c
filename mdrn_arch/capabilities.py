"""What this machine runs natively, asked at run time. Only native support counts: torch's own checks also answer yes
where bf16 is emulated (``torch.cuda.is_bf16_supported()`` by default, on a V100 or T4; oneDNN's
``_is_mkldnn_bf16_supported()`` on any AVX512 CPU), and emulated bf16 runs slower than fp32.
"""
import functools

import torch


@functools.lru_cache(maxsize=None)
def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            return set(next((line.split(':', 1)[1] for line in f if line.startswith(('flags', 'Features'))),
                            '').split())
    except OSError:
        return set()


def _onednn_runs_bf16():
    """oneDNN's own check: bf16 at the instruction set it may use (``ONEDNN_MAX_CPU_ISA`` lowers it); yes also where
    it would emulate bf16 with AVX512."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_native_bf16():
    """Whether bf16 runs natively here: the CPU has bf16 instructions (AVX512-BF16 or AMX, torch's own checks;
    AVX-NE-CONVERT on x86; the BF16 extension on Arm) and oneDNN may use them."""
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() or \
        bool(_cpu_flags() & {'avx_ne_convert', 'bf16'})
    return bool(hardware) and _onednn_runs_bf16()


def cuda_has_native_bf16():
    """Whether the CUDA device computes in bf16 natively (compute capability 8.0 and newer), not by emulation."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
