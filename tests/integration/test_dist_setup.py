"""The process group and the DDP wrap of the ``basicsr`` command (``pipeline_fixes``): the backend for each device,
the collective timeout, buffers synchronised at wrap time, and only rank 0 writing. Ranks are gloo processes on the
CPU; what differs on CUDA (NCCL) is the backend string, checked as such."""
import datetime
import os
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from mdrn_models.integration import basicsr_fixes, pipeline_fixes


@pytest.fixture
def init_calls(monkeypatch):
    """``init_dist``'s call of ``dist.init_process_group``, recorded instead of made (torchrun's environment set)."""
    calls = []
    monkeypatch.setattr(dist, 'init_process_group', lambda **kw: calls.append(kw))
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: None)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    for name, value in (('LOCAL_RANK', '0'), ('RANK', '0'), ('WORLD_SIZE', '1'), ('MASTER_ADDR', 'localhost'),
                        ('MASTER_PORT', '29500')):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(basicsr_fixes, '_dist_params', {})
    return calls


@pytest.mark.parametrize('cuda, dist_params, backend', [
    (True, {}, 'cpu:gloo,cuda:nccl'),  # a num_gpu: 0 run (CPU tensors) on a GPU machine needs the gloo half
    (True, {'backend': 'nccl'}, 'cpu:gloo,cuda:nccl'),  # BasicSR's option files say nccl
    (False, {}, 'gloo'),
    (False, {'backend': 'nccl'}, 'gloo'),
    (True, {'backend': 'gloo'}, 'gloo'),  # any other value is the user's choice
])
def test_the_process_group_serves_cpu_tensors_wherever_a_run_may_hold_them(init_calls, monkeypatch, cuda,
                                                                           dist_params, backend):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    basicsr_fixes._dist_params.update(dist_params)
    basicsr_fixes.init_dist('pytorch')
    assert init_calls[0]['backend'] == backend


@pytest.mark.parametrize('dist_params, forced, seconds', [
    ({}, [], basicsr_fixes.DEFAULT_DIST_TIMEOUT_S),
    ({'timeout': 7200}, [], 7200),
    ({'backend': 'nccl', 'port': 29500}, ['dist_params:timeout=5400'], 5400),
])
def test_the_collective_timeout_comes_from_dist_params_for_every_launcher(tmp_path, init_calls, dist_params, forced,
                                                                          seconds):
    yml = tmp_path / 'x.yml'
    basicsr_fixes._dist_params.update(pipeline_fixes.read_dist_params(yml, dist_params, forced))
    basicsr_fixes.init_dist('pytorch')
    assert init_calls[0]['timeout'] == datetime.timedelta(seconds=seconds)
    assert basicsr_fixes.DEFAULT_DIST_TIMEOUT_S == 1800  # the default docs/training.md states


@pytest.mark.bad_input
@pytest.mark.parametrize('dist_params, message', [
    ({'timeout': -5}, 'dist_params.timeout: -5 is out of range: it must be at least 1'),
    ({'timeout': '1h'}, "dist_params.timeout: '1h' is text, not a number"),
    ({'timout': 60}, "dist_params has no option 'timout': its options are backend, port (slurm) and timeout"),
    ({'port': 70000}, 'dist_params.port: 70000 is out of range'),
])
def test_bad_dist_params_are_one_line_before_any_folder(tmp_path, basicsr_cli, dist_params, message):
    yml = tmp_path / 'x.yml'
    yml.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'DenoiseModel', 'num_gpu': 0, 'dist_params': dist_params}))
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.yml']


class Buffered(nn.Module):
    """A module with buffers drawn at random at construction, as spectral norm's power-iteration vectors are."""

    def __init__(self):
        super().__init__()
        self.conv = nn.utils.spectral_norm(nn.Conv2d(1, 2, 3))
        self.register_buffer('running', torch.randn(4))


def _wrap_on_rank(rank, store, results):
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    torch.manual_seed(rank)  # BasicSR seeds each rank with seed + rank
    model = types.SimpleNamespace(device=torch.device('cpu'), opt={'dist': True, 'num_gpu': 0})
    net = basicsr_fixes.model_to_device(model, Buffered())
    torch.save({k: v.clone() for k, v in net.module.state_dict().items()}, f'{results}/rank{rank}.pth')
    try:  # a write to the run folder from rank 1 is refused (a forgotten @master_only)
        pipeline_fixes.TorchWithAtomicSave.save({}, f'{results}/written_by_rank{rank}.pth')
    except RuntimeError as exc:
        torch.save(str(exc), f'{results}/refused_rank{rank}.pth')
    dist.destroy_process_group()


def test_ddp_wrap_starts_every_rank_from_rank0s_buffers_and_only_rank0_saves(tmp_path):
    mp.spawn(_wrap_on_rank, args=(tmp_path / 'store', tmp_path), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    assert {'running', 'conv.weight_u', 'conv.weight_v'} <= set(r0)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert (tmp_path / 'written_by_rank0.pth').is_file() and not (tmp_path / 'written_by_rank1.pth').exists()
    assert 'rank 1 tried to write' in torch.load(tmp_path / 'refused_rank1.pth')


def test_slurm_processes_take_rank_world_and_gpu_from_slurm(init_calls, monkeypatch):
    """BasicSR's slurm init calls torch.cuda.set_device unconditionally (a CPU job crashes) and ignores the timeout."""
    devices = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)  # each task sees its own GPU
    monkeypatch.setattr(torch.cuda, 'set_device', devices.append)
    for key, value in {'SLURM_NODELIST': 'node[0-1]', 'SLURM_NTASKS': '16', 'SLURM_PROCID': '11',
                       'SLURM_LOCALID': '3', 'MASTER_ADDR': 'node0'}.items():
        monkeypatch.setenv(key, value)
    for key in ('MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    basicsr_fixes._dist_params.update(backend='nccl', timeout=3600, port=29600)  # the file's, with --force_yml
    basicsr_fixes.init_dist('slurm', backend='nccl', timeout=1800, port=29500)  # BasicSR: the file's, without
    env = {k: os.environ[k] for k in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    assert env == {'MASTER_ADDR': 'node0', 'MASTER_PORT': '29600', 'RANK': '11', 'WORLD_SIZE': '16', 'LOCAL_RANK': '3'}
    assert devices == [0] and init_calls == [{'backend': 'cpu:gloo,cuda:nccl',
                                              'timeout': datetime.timedelta(seconds=3600)}]
