"""MDRN architecture for BasicSR. Importing this package registers ``MDRN`` in ``basicsr``'s ARCH_REGISTRY."""
from . import basicsr_compat  # noqa: F401  (must run before the first basicsr import)
from .mdrn_arch import MDRN, MSAB, MSAG  # noqa: E402

__all__ = ["MDRN", "MSAB", "MSAG"]
