"""``basicsr gpu-session --tiny``: the whole prepared GPU session, at toy sizes on the CPU, writes every file the GPU
run writes, so GPU minutes are not spent finding bugs."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from mdrn_models.tools import gpu_session


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (('Train400', 6), ('Set12', 2), ('BSD68', 2)):
        (tmp_path / 'data' / name).mkdir(parents=True)
        for k in range(n):
            yy, xx = np.mgrid[:40, :44]
            img = 120 + 60 * np.sin(xx / (2 + k)) * np.cos(yy / 3) + rng.normal(0, 5, xx.shape)
            cv2.imwrite(str(tmp_path / 'data' / name / f'im{k}.png'), img.clip(0, 255).astype(np.uint8))
    return tmp_path / 'data'


@pytest.mark.slow
def test_the_tiny_session_runs_every_step_and_writes_every_file(tmp_path, data):
    out = tmp_path / 'out'
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-m', 'mdrn_models.cli', 'gpu-session', '--data', str(data), '--out',
                           str(out), '--tiny', '--minutes', '10'], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / 'summary.md').read_text()
    for step in ('inference benchmark', 'training-step benchmark', 'DDP distillation + resume', 'training', 'test',
                 'export'):
        assert f'| {step} | ok |' in summary, summary
    for path in ('benchmark_inference.md', 'benchmark_train.md', 'ddp/resume.log', 'train/train.log',
                 'test/test.log', 'weights/mdrn_gray_s25_gpu.pth'):
        assert (out / path).is_file(), path
    assert '| 2 | ' in (out / 'benchmark_train.md').read_text()  # the batch of the tiny mode
    assert '"Set12": {' in summary and '"BSD68": {' in summary and '"iterations": 4' in summary


@pytest.mark.bad_input
def test_bad_arguments_are_one_line_before_anything(tmp_path, data, capsys):
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'mine.txt').write_text('keep')
    (data / 'BSD68' / 'im0.png').unlink()
    (data / 'BSD68' / 'im1.png').unlink()
    for argv, message in ((['--out', str(tmp_path / 'busy')], 'is not a folder of PNG images'),):
        with pytest.raises(SystemExit):
            gpu_session.main(['--data', str(data), '--tiny', *argv])
        assert message in capsys.readouterr().err
    cv2.imwrite(str(data / 'BSD68' / 'a.png'), np.zeros((8, 8), np.uint8))
    with pytest.raises(SystemExit):
        gpu_session.main(['--data', str(data), '--tiny', '--out', str(tmp_path / 'busy')])
    assert 'exists and is not an empty folder' in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / 'busy').iterdir()) == ['mine.txt']
