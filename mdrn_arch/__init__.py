"""MDRN architecture (and the DnCNN/FFDNet peers) for BasicSR. Importing this package registers ``MDRN``,
``DnCNN`` and ``FFDNet`` in ``basicsr``'s ARCH_REGISTRY."""
from . import basicsr_compat  # noqa: F401  (must run before the first basicsr import)

import torch  # noqa: E402

from .dncnn_arch import DnCNN  # noqa: E402
from .ffdnet_arch import FFDNet  # noqa: E402
from .mdrn_arch import MDRN, MSAB, MSAG  # noqa: E402

# MDRN on the CPU runs into float32 denormals, which x86 handles far slower (measured here: a toy MDRN training step
# 14 s -> 0.25 s). Flushing them to zero changes nothing above ~1e-38 and only affects CPU ops. The flag must be set
# before torch's thread pool starts (workers copy it then), so it is set when the arch is imported, which the
# `basicsr` command and the plugin packages do before any tensor work; GPU runs are unaffected.
torch.set_flush_denormal(True)

__all__ = ['MDRN', 'MSAB', 'MSAG', 'DnCNN', 'FFDNet']
