"""MDRN architecture (and the DnCNN/FFDNet peers) for BasicSR. Importing this package registers ``MDRN``,
``DnCNN`` and ``FFDNet`` in ``basicsr``'s ARCH_REGISTRY, and changes nothing else in the process (denormal flushing
is the caller's choice: docs/architecture.md#denormals).
"""
from . import basicsr_compat  # noqa: F401  (must run before the first basicsr import)

from .dncnn_arch import DnCNN  # noqa: E402
from .ffdnet_arch import FFDNet  # noqa: E402
from .fused_inference import disable_fused_inference, enable_fused_inference  # noqa: E402
from .mdrn_arch import MDRN, MSAB, MSAG  # noqa: E402

__all__ = ['MDRN', 'MSAB', 'MSAG', 'DnCNN', 'FFDNet', 'enable_fused_inference', 'disable_fused_inference']
