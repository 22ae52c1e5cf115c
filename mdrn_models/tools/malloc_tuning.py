"""Keep freed memory in the process instead of handing it back to the OS (glibc ``mallopt``). Applied by the commands
that run one job, never on import (a process-wide setting). Why and what it gains: docs/benchmarks.md (Freed memory
and page faults).
"""
import ctypes
import os
import sys

# glibc <malloc.h>: mallopt parameters, and the values set (mallopt takes an int)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 2**30),  # blocks up to 1 GiB come from the heap, so freed ones are reused
            (M_TRIM_THRESHOLD, 2**31 - 1),  # never give the top of the heap back
            (M_TOP_PAD, 2**26))  # grow the heap 64 MiB at a time


def keep_freed_memory():
    """Apply ``SETTINGS`` unless ``MDRN_DEFAULT_MALLOC=1``; returns whether they were applied."""
    if os.environ.get('MDRN_DEFAULT_MALLOC') == '1' or not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    # musl has a mallopt that does nothing and returns 0; glibc returns 1 for each accepted setting
    return all([mallopt(param, value) == 1 for param, value in SETTINGS])
