"""Crash and resume: a real training subprocess killed with SIGKILL continues with ``--auto_resume``."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, train_yml
from mdrn_models.integration import basicsr_fixes


def _states(state_dir):
    return sorted(int(p.stem) for p in state_dir.glob('*.state')) if state_dir.is_dir() else []


@pytest.mark.bad_input
def test_sigkill_then_auto_resume_continues_schedule_and_optimizer(tmp_path, pairs, basicsr_cli):
    root = tmp_path / 'root'
    yml = train_yml(tmp_path / 'train.yml', pairs, 'crash', total_iter=100000)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': ''}
    proc = subprocess.Popen([sys.executable, '-m', 'mdrn_cli', 'train', '-opt', str(yml), '--root', str(root)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_dir = root / 'experiments' / 'crash' / 'training_states'
    deadline = time.time() + 300
    try:
        while len(_states(state_dir)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(_states(state_dir)) >= 2, 'training never wrote two checkpoints'
    # newest state as written before the kill; a truncated newest file must make resume fall back, not fail
    saved = _states(state_dir)
    newest = saved[-1]
    target = newest + 4
    out = basicsr_cli('train', '-opt', yml, '--root', root, '--auto_resume', '--force_yml',
                      f'train:total_iter={target}', cwd=tmp_path).stdout
    resumed = int(re.search(r'Resuming training from epoch: \d+, iter: (\d+)\.', out).group(1))
    assert resumed in saved[-2:]
    final = torch.load(root / 'experiments' / 'crash' / 'training_states' / f'{target}.state', weights_only=False)
    # Adam's step count continued from the saved optimizer state instead of restarting at 0
    steps = {int(s['step']) for s in final['optimizers'][0]['state'].values()}
    assert steps == {target}, (saved, resumed, steps, out[-3000:])
    # the LR schedule continued: milestone 3 with gamma 0.5 from lr 1e-3
    assert final['schedulers'][0]['last_epoch'] == target - 1  # BasicSR steps the scheduler from iteration 2 on
    assert abs(final['optimizers'][0]['param_groups'][0]['lr'] - 5e-4) < 1e-12
    assert (root / 'experiments' / 'crash' / 'models' / f'net_g_{target}.pth').is_file()


@pytest.mark.bad_input
def test_truncated_newest_state_falls_back_to_previous(tmp_path):
    state_dir = tmp_path / 'training_states'
    state_dir.mkdir()
    torch.save({'iter': 2, 'epoch': 0, 'optimizers': [], 'schedulers': []}, state_dir / '2.state')
    (state_dir / '4.state').write_bytes(b'PK\x03\x04 truncated')
    opt = {'auto_resume': True, 'path': {'training_states': str(state_dir), 'models': str(tmp_path / 'models'),
                                         'resume_state': None}}
    state = basicsr_fixes.load_resume_state(opt)
    assert state['iter'] == 2 and opt['path']['resume_state'] == str(state_dir / '2.state')


def _tree(root):
    return {p: p.read_bytes() if p.is_file() else None for p in root.rglob('*')}


@pytest.mark.bad_input
def test_auto_resume_takes_the_newest_complete_pair(tmp_path, pairs, capsys):
    """A newest state whose network checkpoint is damaged is skipped naming that file, and a stray
    ``40_backup.state`` is no state: the run resumes from the pair before and trains on to total_iter."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'pairs_run', total_iter=4)
    argv = ['-opt', str(yml), '--root', str(tmp_path)]
    pipelines.run('train', argv, str(tmp_path))
    run = tmp_path / 'experiments' / 'pairs_run'
    net_4 = run / 'models' / 'net_g_4.pth'
    net_4.write_bytes(net_4.read_bytes()[:200])  # killed while writing it
    (run / 'training_states' / '40_backup.state').write_bytes((run / 'training_states' / '4.state').read_bytes())
    capsys.readouterr()
    pipelines.run('train', [*argv, '--auto_resume', '--force_yml', 'train:total_iter=6'], str(tmp_path))
    out = capsys.readouterr().out
    assert re.search(r'Skipping training state .*/4\.state: .*net_g_4\.pth', out), out[-3000:]
    assert (run / 'models' / 'net_g_6.pth').is_file() and not (tmp_path / 'experiments' / 'pairs_run_archived')\
        .exists()
    final = torch.load(run / 'training_states' / '6.state', weights_only=False)
    assert {int(s['step']) for s in final['optimizers'][0]['state'].values()} == {6}  # 2 + 4 more steps


@pytest.mark.bad_input
def test_resume_state_with_a_damaged_network_file_is_one_line(tmp_path, pairs):
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'explicit', total_iter=2)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    run = tmp_path / 'experiments' / 'explicit'
    (run / 'models' / 'net_g_2.pth').write_bytes(b'not a checkpoint')
    before = _tree(tmp_path)
    with pytest.raises(SystemExit, match=r'^error: cannot resume from .*2\.state: .*net_g_2\.pth.*; set '
                                         r'path\.resume_state to an earlier state'):
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml',
                                 f'path:resume_state={run / "training_states" / "2.state"}'], str(tmp_path))
    assert _tree(tmp_path) == before


@pytest.mark.bad_input
def test_auto_resume_from_elsewhere_names_the_projects_states(tmp_path, pairs):
    """Run from another folder without --root, --auto_resume finds nothing there; the option file's project holds
    the run's states: one line naming it, instead of silently training from iteration 0."""
    from mdrn_models.tools import pipelines
    project = tmp_path / 'project'
    (project / 'options').mkdir(parents=True)
    yml = train_yml(project / 'options' / 'train.yml', pairs, 'far_run', total_iter=2)
    pipelines.run('train', ['-opt', str(yml), '--root', str(project)], str(project))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    before = _tree(tmp_path)
    with pytest.raises(SystemExit, match=rf'^error: --auto_resume found no training state in .*, but '
                                         rf'{re.escape(str(project))}/experiments/far_run/training_states holds .*add '
                                         rf'--root {re.escape(str(project))} to resume'):
        pipelines.run('train', ['-opt', str(yml), '--auto_resume'], str(elsewhere))
    assert _tree(tmp_path) == before


@pytest.mark.bad_input
def test_auto_resume_after_the_network_options_changed_is_one_line(tmp_path, pairs):
    """``num_feat`` 8 -> 16 between the run and ``--auto_resume``: one line naming the checkpoint, the mismatch and
    the option file, before anything is written into the run folder (no new option copy, no log)."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'changed', total_iter=2)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    yml.write_text(yml.read_text().replace('num_feat: 8', 'num_feat: 16'))
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--auto_resume'], str(tmp_path))
    run = tmp_path / 'experiments' / 'changed'
    assert re.fullmatch(
        rf"error: cannot resume run 'changed': {re.escape(str(run / 'models' / 'net_g_2.pth'))} does not fit "
        rf'network_g of {re.escape(str(yml))}: .*; resume with the network options the run was trained with \(its '
        rf'copy of the option file is in {re.escape(str(run))}\), or start a new run under another name',
        str(exc.value)), str(exc.value)
    assert 'shape mismatches (head.weight: checkpoint [8, 1, 3, 3] vs network [16, 1, 3, 3])' in str(exc.value)
    assert _tree(tmp_path) == before
