"""``basicsr gpu-session --tiny``: the whole prepared GPU session, at toy sizes on the CPU, writes every file the GPU
run writes, so GPU minutes are not spent finding bugs."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from mdrn_models.tools import benchmark, gpu_session


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
    proc = subprocess.run([sys.executable, '-m', 'mdrn_cli', 'gpu-session', '--data', str(data), '--out',
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


def _session(tmp_path, data, minutes=10):
    args = gpu_session.parsers.gpu_session().parse_args(['--data', str(data), '--out', str(tmp_path / 'out'), '--tiny',
                                                         '--minutes', str(minutes)])
    (tmp_path / 'out').mkdir()
    return gpu_session.Session(args, 'cpu')


def _fake_bench(fits, memory_error, steps=None):
    """``bench_train`` on a device where batches up to ``fits`` fit; a larger one raises ``memory_error``."""
    def bench_train(device, batch, *args, **kwargs):
        if steps is not None:
            steps.append(batch)
        if batch > fits:
            raise memory_error
        return {k: (0.01 * batch, 0.011 * batch) for k in ('plain', 'HADS', 'HMDS')}
    return bench_train


@pytest.mark.parametrize('error', [
    torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB'),
    RuntimeError('cuDNN error: CUDNN_STATUS_ALLOC_FAILED'),
    RuntimeError('CUDA error: out of memory'),
    RuntimeError('cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous '
                 'input.'),
])
def test_the_largest_batch_search_takes_every_memory_error_as_too_big(tmp_path, data, monkeypatch, error):
    monkeypatch.setattr(benchmark, 'bench_train', _fake_bench(2, error))
    session = _session(tmp_path, data)
    session.cfg = {**session.cfg, 'max_batch': 16}
    session.step('training-step benchmark', session.train_benchmark)
    assert session.steps[-1][1] == 'ok' and session.facts['largest_batch'] == 2
    table = (tmp_path / 'out' / 'benchmark_train.md').read_text()
    assert '| 2 | ' in table and 'Batch 4 ran out of memory.' in table


@pytest.mark.bad_input
def test_no_batch_fitting_is_a_failed_step_with_its_reason_and_the_session_goes_on(tmp_path, data, monkeypatch):
    monkeypatch.setattr(benchmark, 'bench_train', _fake_bench(0, RuntimeError('CUDA error: out of memory')))
    session = _session(tmp_path, data)
    session.step('training-step benchmark', session.train_benchmark)
    assert session.steps[-1][1:2] == ('failed',)
    assert 'no training batch fits this device: batch 2 ran out of memory' in session.steps[-1][3]
    assert 'Batch 2 ran out of memory.' in (tmp_path / 'out' / 'benchmark_train.md').read_text()


def test_another_error_is_not_taken_for_too_big(tmp_path, data, monkeypatch):
    monkeypatch.setattr(benchmark, 'bench_train', _fake_bench(0, RuntimeError('CUDA error: an illegal memory access')))
    session = _session(tmp_path, data)
    session.step('training-step benchmark', session.train_benchmark)
    assert session.steps[-1][1] == 'failed' and 'illegal memory access' in session.steps[-1][3]


def test_a_step_out_of_time_keeps_the_rows_it_finished(tmp_path, data, monkeypatch):
    """Each step has its own share of --minutes; the batch search stops there and keeps its table."""
    steps = []
    fake = _fake_bench(10 ** 6, None, steps)

    def slow(*args, **kwargs):
        session.step_deadline = 0  # the share runs out during this batch
        return fake(*args, **kwargs)
    monkeypatch.setattr(benchmark, 'bench_train', slow)
    session = _session(tmp_path, data)
    session.step('training-step benchmark', session.train_benchmark)
    assert steps == [2] and session.steps[-1][1] == 'timed out'
    assert '| 2 | ' in (tmp_path / 'out' / 'benchmark_train.md').read_text()
    assert 'what it wrote so far is kept' in session.steps[-1][3]


def test_a_subprocess_step_out_of_time_is_stopped_and_recorded(tmp_path, data):
    session = _session(tmp_path, data)
    session.step_deadline = 0
    log = tmp_path / 'out' / 'sleep.log'
    with pytest.raises(gpu_session.StepTimedOut, match='stopped after its 1 s'):
        # (train imports torch and the plugins before it reads the option file: seconds, more than the 1 s allowed)
        session.basicsr(['train', '-opt', str(tmp_path / 'absent.yml')], log, timeout=0.01)
