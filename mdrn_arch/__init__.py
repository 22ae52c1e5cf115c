"""MDRN architecture (and the DnCNN/FFDNet peers) for BasicSR. Importing this package registers ``MDRN``,
``DnCNN`` and ``FFDNet`` in ``basicsr``'s ARCH_REGISTRY, and changes nothing else in the process.

On the CPU, MDRN runs into float32 denormals, which x86 handles far slower (measured here: a toy MDRN training step
14 s -> 0.25 s). ``torch.set_flush_denormal(True)`` fixes it for the whole process (values below ~1e-38 become 0), so
it is the caller's choice: the ``basicsr`` command sets it at its start, before torch's thread pool exists (pool
threads copy the flag when they start); a program of your own can do the same.
"""
from . import basicsr_compat  # noqa: F401  (must run before the first basicsr import)

from .dncnn_arch import DnCNN  # noqa: E402
from .ffdnet_arch import FFDNet  # noqa: E402
from .fused_inference import disable_fused_inference, enable_fused_inference  # noqa: E402
from .mdrn_arch import MDRN, MSAB, MSAG  # noqa: E402

__all__ = ['MDRN', 'MSAB', 'MSAG', 'DnCNN', 'FFDNet', 'enable_fused_inference', 'disable_fused_inference']
