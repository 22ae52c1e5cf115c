"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

Called by the ``basicsr`` commands that run one job (train, test, denoise, compare, export; the benchmark with
``--keep-freed-memory``), never on import: it is a process-wide setting, right for a process that runs
one job and exits, a surprise inside someone's notebook.

Why: with glibc's defaults a large block (above a threshold that adapts up to 32 MiB) is a fresh ``mmap``, handed back
on ``free``, and every page of it faults again on first touch; MDRN allocates and frees feature maps of 8-256 MiB
thousands of times per forward. Measured here (2-core CPU, one fp32 forward of a 1024x1024 gray image): MDRN 25.6 s
-> 12.8 s, DnCNN 7.5 s -> 5.6 s. Cost: the process keeps its peak heap until it exits. ``MDRN_DEFAULT_MALLOC=1`` in
the environment leaves glibc's defaults.
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
    """Apply ``SETTINGS`` with glibc's ``mallopt``. Returns whether they were applied."""
    if os.environ.get('MDRN_DEFAULT_MALLOC') == '1' or not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    # musl has a mallopt that does nothing and returns 0; glibc returns 1 for each accepted setting
    return all([mallopt(param, value) == 1 for param, value in SETTINGS])
