"""Distributed training on CPU: gloo process groups under torchrun, through the real ``basicsr train`` pipeline
(``dist_worker.py``). What a GPU cluster would hit first is proved here with CPU ranks: every rank taking the same
decisions at the same iteration, only rank 0 writing, and resuming on nodes that share no filesystem."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from test_hkd_model import STUDENT, _e2e_opt, _write_pngs, save_net


def torchrun(tmp_path, opt, nproc, *args, env=None):
    """``basicsr train`` of ``opt`` under ``torchrun --nproc_per_node=nproc`` (gloo: no CUDA visible); returns the
    process and the dump folder (``rank<r>.pth``, ``iters_rank<r>.txt``)."""
    yml = tmp_path / f'{opt["name"]}.yml'
    yml.write_text(yaml.safe_dump(opt))
    out = tmp_path / 'dump'
    out.mkdir(exist_ok=True)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1', **(env or {})}
    proc = subprocess.run(
        # --monitor-interval: the agent looks at its workers each second (it SIGTERMs the others once one has failed),
        # so every rank has time to end on its own
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
         '--monitor-interval=1',
         str(REPO / 'tests' / 'models' / 'dist_worker.py'), str(out), 'train', '-opt', str(yml), '--launcher', 'pytorch',
         '--root', str(tmp_path), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600)
    return proc, out


def iterations(out, rank):
    return [int(line) for line in (out / f'iters_rank{rank}.txt').read_text().split()]


def hkd_opt(tmp_path, name, total_iter):
    gt = tmp_path / 'toy'
    _write_pngs(gt, n=4)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}  # wider teacher -> adapters, averaged across ranks
    opt = _e2e_opt(name, gt, save_net(wide, tmp_path / 'teacher.pth', key='params_ema'), wide, total_iter=total_iter)
    opt['train']['ema_decay'] = 0  # validate through the DDP-wrapped student: only rank 0 runs that forward
    return opt


def test_two_process_gloo_hkd_run_validates_keeps_ranks_in_sync_and_teacher_frozen(tmp_path):
    opt = hkd_opt(tmp_path, 'ddp_hkd', total_iter=4)
    proc, out = torchrun(tmp_path, opt, 2)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'World size (gpu number): 2' in proc.stdout
    assert proc.stdout.count('Validation toyval') >= 2  # mid-run (iteration 2), then more training steps
    r0, r1 = (torch.load(out / f'rank{r}.pth') for r in (0, 1))
    initial_teacher = torch.load(tmp_path / 'teacher.pth')['params_ema']
    for rank in (r0, r1):
        assert all(torch.equal(rank['t'][k], initial_teacher[k]) for k in initial_teacher)  # teacher unchanged
    assert r0['g'].keys() == r1['g'].keys() and r0['adapter']
    for part in ('g', 'adapter'):  # DDP kept the student (and adapters) identical across ranks
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
    assert (tmp_path / 'experiments' / 'ddp_hkd' / 'models' / 'net_g_4.pth').is_file()


@pytest.mark.bad_input
@pytest.mark.parametrize('nan_rank', [0, 1])
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_that_iteration(tmp_path, nan_rank):
    """BasicSR reduces the losses to rank 0 only: a NaN on rank 1 used to stop ranks 0 and 1 while rank 2 walked into
    the next gradient all-reduce (gloo: 'Connection closed by peer'; NCCL: a hang until the watchdog)."""
    opt = hkd_opt(tmp_path, 'nan_stop', total_iter=6)
    opt['logger']['save_checkpoint_freq'] = 100
    proc, out = torchrun(tmp_path, opt, 3, env={'DIST_TEST_NAN': f'{nan_rank}:3'})
    assert proc.returncode != 0
    assert [iterations(out, r)[-1] for r in range(3)] == [3, 3, 3], proc.stdout[-5000:]
    message = 'error: training stopped: loss l_pix is nan (non-finite); nothing of this iteration was saved'
    assert proc.stdout.count(message) == 3, proc.stdout[-5000:]
    assert 'Connection closed' not in proc.stdout and f'File "{REPO}' not in proc.stdout, proc.stdout[-5000:]


def test_ranks_without_a_shared_filesystem_save_on_rank0_and_resume_from_it(tmp_path):
    """Rank 1 runs under a root of its own, where BasicSR makes no run folder (nodes that share no filesystem): it
    writes nothing, and on --auto_resume it resumes from rank 0's state and checkpoints, sent by rank 0."""
    opt = hkd_opt(tmp_path, 'two_roots', total_iter=4)
    per_rank = {'DIST_TEST_ROOT_PER_RANK': '1'}
    proc, out = torchrun(tmp_path, opt, 2, env=per_rank)
    assert proc.returncode == 0, proc.stdout[-5000:]
    run0 = tmp_path / 'rank0' / 'experiments' / 'two_roots'
    assert (run0 / 'training_states' / '4.state').is_file() and (run0 / 'models' / 'net_g_4.pth').is_file()
    assert list((tmp_path / 'rank1').iterdir()) == []  # rank 1 wrote nothing
    proc, out = torchrun(tmp_path, opt, 2, '--auto_resume', '--force_yml', 'train:total_iter=6', env=per_rank)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'Resuming training from epoch' in proc.stdout
    assert iterations(out, 0)[-2:] == iterations(out, 1)[-2:] == [5, 6]  # both ranks continued at iteration 5
    r0, r1 = (torch.load(out / f'rank{r}.pth') for r in (0, 1))
    for part in ('g', 'adapter'):  # rank 1 loaded rank 0's checkpoint and adapters
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
    assert (run0 / 'models' / 'net_g_6.pth').is_file() and list((tmp_path / 'rank1').iterdir()) == []


@pytest.mark.bad_input
def test_training_data_gone_on_one_rank_stops_every_rank_at_the_same_iteration(tmp_path):
    """Rank 1's data disappears after two batches: its third step reruns its second batch and every rank stops at
    the end of that step, rank 1 with the dataset's message, the others naming it."""
    opt = hkd_opt(tmp_path, 'data_gone', total_iter=6)
    opt['logger']['save_checkpoint_freq'] = 100
    proc, out = torchrun(tmp_path, opt, 2, env={'DIST_TEST_DATA_GONE': '1:2'})
    assert proc.returncode != 0
    assert [iterations(out, r)[-1] for r in range(2)] == [3, 3], proc.stdout[-5000:]
    assert proc.stdout.count('error: datasets.train: the data of rank 1 is gone') == 1, proc.stdout[-5000:]
    assert proc.stdout.count('error: training stopped: 1 other process(es) could not go on') == 1, proc.stdout[-5000:]
    assert f'File "{REPO}' not in proc.stdout, proc.stdout[-5000:]


@pytest.mark.bad_input
def test_a_save_that_fails_on_rank0_stops_every_rank(tmp_path):
    opt = hkd_opt(tmp_path, 'disk_full', total_iter=6)
    opt['val']['val_freq'] = 100
    proc, out = torchrun(tmp_path, opt, 2, env={'DIST_TEST_DISK_FULL': '4'})
    assert proc.returncode != 0
    assert [iterations(out, r)[-1] for r in range(2)] == [4, 4], proc.stdout[-5000:]
    assert 'net_g_4.pth: No space left on device' in proc.stdout, proc.stdout[-5000:]
    assert 'error: training stopped: rank 0 could not save the checkpoint' in proc.stdout, proc.stdout[-5000:]
    assert f'File "{REPO}' not in proc.stdout, proc.stdout[-5000:]
    models = tmp_path / 'experiments' / 'disk_full' / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth']  # the last complete checkpoint stays


@pytest.mark.parametrize('fails_on', [None, 1])
def test_compiled_ddp_distillation_trains_and_steps_aside_on_every_rank_when_one_fails(tmp_path, fails_on):
    """The compiled, hooked student under DDP (traced with aot_eager) trains with the ranks identical; where the
    compiled graph fails on one process only (inductor's code is each machine's), every process trains uncompiled:
    the check's outcome is voted."""
    opt = hkd_opt(tmp_path, 'compile_vote', total_iter=2)
    opt['train']['compile'] = True
    proc, out = torchrun(tmp_path, opt, 2, env={'DIST_TEST_COMPILE_FAILS': str(-1 if fails_on is None else fails_on)})
    assert proc.returncode == 0, proc.stdout[-5000:]
    aside = 'train.compile: torch.compile of MDRN steps aside on this machine (on another rank)'
    assert (aside in proc.stdout) == (fails_on is not None), proc.stdout[-5000:]
    assert ('torch.compile on' in proc.stdout) == (fails_on is None), proc.stdout[-5000:]
    r0, r1 = (torch.load(out / f'rank{r}.pth') for r in (0, 1))
    assert all(torch.equal(r0['g'][k], r1['g'][k]) for k in r0['g'])
