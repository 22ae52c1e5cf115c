"""Shared fixtures. The compat alias is imported first, as every entry point of the project does."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('MDRN_SHARED', REPO.parent / 'shared'))


@pytest.fixture
def shared_dir():
    """``../shared`` (or $MDRN_SHARED): real test sets and peer weights; tests needing it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f'shared data folder not found at {SHARED} (set MDRN_SHARED to its path)')
    return SHARED


def run_basicsr(*args, cwd, check=True, env=None, timeout=600):
    """Run the real ``basicsr`` command (as ``python -m mdrn_models.cli``, so it works without the console script
    on PATH) in a subprocess; returns the CompletedProcess with stdout+stderr in ``.stdout``."""
    full_env = {**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': '', **(env or {})}
    proc = subprocess.run([sys.executable, '-m', 'mdrn_models.cli', *map(str, args)], cwd=cwd, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'basicsr {" ".join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-6000:]}')
    return proc


@pytest.fixture
def basicsr_cli():
    return run_basicsr
