"""MDRN architecture for BasicSR. Importing this package registers ``MDRN`` in ``basicsr``'s ARCH_REGISTRY."""
from . import basicsr_compat  # noqa: F401  (must run before the first basicsr import)
from .mdrn_arch import MDRN, MSAB, MSAG  # noqa: E402
from .dncnn_arch import DnCNN  # noqa: E402
from .ffdnet_arch import FFDNet  # noqa: E402

__all__ = ["MDRN", "MSAB", "MSAG", "DnCNN", "FFDNet"]
