"""Shared fixtures. The compat alias is imported first, as every entry point of the project does."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)
import torch  # noqa: E402

# as the `basicsr` command does at its start (docs/architecture.md#denormals says why): toy CPU training steps are
# many times slower with float32 denormals
torch.set_flush_denormal(True)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('MDRN_SHARED', REPO.parent / 'shared'))


@pytest.fixture
def shared_dir():
    """``../shared`` (or $MDRN_SHARED): real test sets and peer weights; tests needing it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f'shared data folder not found at {SHARED} (set MDRN_SHARED to its path)')
    return SHARED


def run_basicsr(*args, cwd, check=True, env=None, timeout=600):
    """Run the real ``basicsr`` command (as ``python -m mdrn_cli``, so it works without the console script
    on PATH) in a subprocess; returns the CompletedProcess with stdout+stderr in ``.stdout``."""
    full_env = {**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': '', **(env or {})}
    proc = subprocess.run([sys.executable, '-m', 'mdrn_cli', *map(str, args)], cwd=cwd, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'basicsr {" ".join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-6000:]}')
    return proc


@pytest.fixture
def basicsr_cli():
    return run_basicsr


@pytest.fixture(scope='session')
def pairs(tmp_path_factory):
    """Four 24x24 gray clean images and fixed noisy copies (sigma 25)."""
    root = tmp_path_factory.mktemp('pairs')
    rng = np.random.default_rng(0)
    for sub in ('gt', 'lq'):
        (root / sub).mkdir()
    for k in range(4):
        yy, xx = np.mgrid[:24, :24]
        clean = (127 + 100 * np.sin(xx / (2 + k)) * np.cos(yy / 3)).clip(0, 255)
        noisy = (clean + rng.normal(0, 25, clean.shape)).clip(0, 255)
        cv2.imwrite(str(root / 'gt' / f'im{k}.png'), clean.astype(np.uint8))
        cv2.imwrite(str(root / 'lq' / f'im{k}.png'), noisy.astype(np.uint8))
    return root


def write_yml(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def train_yml(path, pairs, name, total_iter):
    """A tiny SRModel + MDRN training config on ``pairs`` (checkpoint every 2 iterations, LR halved after 3)."""
    return write_yml(path, f"""
        name: {name}
        model_type: SRModel
        scale: 1
        num_gpu: 0
        manual_seed: 0
        datasets:
          train:
            name: pairs
            type: PairedImageDataset
            dataroot_gt: {pairs / 'gt'}
            dataroot_lq: {pairs / 'lq'}
            io_backend: {{type: disk}}
            color: y
            gt_size: 16
            use_hflip: true
            use_rot: true
            num_worker_per_gpu: 0
            batch_size_per_gpu: 2
            dataset_enlarge_ratio: 1
          val:
            name: pairs_val
            type: PairedImageDataset
            dataroot_gt: {pairs / 'gt'}
            dataroot_lq: {pairs / 'lq'}
            io_backend: {{type: disk}}
            color: y
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{pretrain_network_g: ~, strict_load_g: true, resume_state: ~}}
        train:
          optim_g: {{type: Adam, lr: !!float 1e-3}}
          scheduler: {{type: MultiStepLR, milestones: [3], gamma: 0.5}}
          total_iter: {total_iter}
          warmup_iter: -1
          pixel_opt: {{type: L1Loss, loss_weight: 1.0}}
        val:
          val_freq: 100
          save_img: false
          metrics:
            psnr: {{type: calculate_psnr, crop_border: 0, test_y_channel: false}}
        logger: {{print_freq: 1, save_checkpoint_freq: 2, use_tb_logger: false}}
        dist_params: {{backend: gloo, port: 29500}}
        """)


def declared_png(path, width, height):
    """A valid-headed gray PNG that declares ``width`` x ``height`` pixels in a few bytes (its pixel data is cut
    short): what a decompression bomb looks like to a header reader."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'\0' * 4096)) + chunk(b'IEND', b''))
    return path


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a test of a minute or more (real data sets); run first (see below)')
    config.addinivalue_line('markers', 'bad_input: a bad input or a fault; the test checks the one-line message and '
                                       'what the user made is kept (docs/robustness.md counts these)')


def pytest_collection_modifyitems(session, config, items):
    """Slow tests first: with one pytest-xdist worker per core they then run next to the many short ones, instead
    of alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # stable: the order is kept otherwise


@pytest.fixture
def basicsr_log(caplog, monkeypatch):
    """``caplog`` that sees BasicSR's logger ('basicsr' does not propagate to the root logger, and a run set up by
    another test may have raised its level)."""
    import logging
    logger = logging.getLogger('basicsr')
    monkeypatch.setattr(logger, 'handlers', [*logger.handlers, caplog.handler])
    monkeypatch.setattr(logger, 'disabled', False)
    caplog.set_level(logging.INFO, logger='basicsr')
    return caplog
