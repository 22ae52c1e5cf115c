"""Distributed training on CPU: a 2-process gloo run of the distillation model through torchrun."""
import os
import subprocess
import sys

import torch
import yaml

from conftest import REPO
from test_hkd_model import STUDENT, _e2e_opt, _write_pngs, save_net


def test_two_process_gloo_hkd_run_validates_keeps_ranks_in_sync_and_teacher_frozen(tmp_path):
    gt = tmp_path / 'toy'
    _write_pngs(gt, n=4)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}  # wider teacher -> adapters, averaged across ranks
    teacher = save_net(wide, tmp_path / 'teacher.pth', key='params_ema')
    opt = _e2e_opt('ddp_hkd', gt, teacher, wide, total_iter=4)
    opt['train']['ema_decay'] = 0  # validate through the DDP-wrapped student: only rank 0 runs that forward
    yml = tmp_path / 'ddp.yml'
    yml.write_text(yaml.safe_dump(opt))
    out = tmp_path / 'dump'
    out.mkdir()
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         str(REPO / 'tests' / 'models' / 'dist_worker.py'), str(out), 'train', '-opt', str(yml), '--launcher', 'pytorch',
         '--root', str(tmp_path)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'World size (gpu number): 2' in proc.stdout
    assert proc.stdout.count('Validation toyval') >= 2  # mid-run (iteration 2), then more training steps
    r0, r1 = (torch.load(out / f'rank{r}.pth') for r in (0, 1))
    initial_teacher = torch.load(teacher)['params_ema']
    for rank in (r0, r1):
        assert all(torch.equal(rank['t'][k], initial_teacher[k]) for k in initial_teacher)  # teacher unchanged
    assert r0['g'].keys() == r1['g'].keys() and r0['adapter']
    for part in ('g', 'adapter'):  # DDP kept the student (and adapters) identical across ranks
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
    assert (tmp_path / 'experiments' / 'ddp_hkd' / 'models' / 'net_g_4.pth').is_file()
