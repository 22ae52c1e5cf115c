"""Run folders that a second process, a signal or a kill must not lose: the run lock, the launch record that the next
launch undoes, and the one line a stopped run ends with."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import mdrn_cli
from conftest import REPO, train_yml
from mdrn_models.integration import pipeline_fixes
from test_bad_inputs import _previous_run, tree

pytestmark = pytest.mark.bad_input
ENV = {**os.environ, 'PYTHONPATH': f'{REPO}{os.pathsep}{REPO / "tests" / "integration"}', 'CUDA_VISIBLE_DEVICES': '',
       'OMP_NUM_THREADS': '1'}


def _wait_for(check, what, proc, timeout=240):
    end = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f'the run ended before {what}'
        assert time.monotonic() < end, f'no {what} after {timeout} s'
        time.sleep(0.2)


def test_a_live_run_is_not_archived_by_a_second_launch_and_sigterm_says_how_to_resume(tmp_path, pairs,
                                                                                     basicsr_cli):
    yml = train_yml(tmp_path / 'train.yml', pairs, 'same', total_iter=10 ** 6)
    states = tmp_path / 'experiments' / 'same' / 'training_states'
    with open(tmp_path / 'first.log', 'w') as log:
        first = subprocess.Popen([sys.executable, '-m', 'mdrn_cli', 'train', '-opt', str(yml), '--root',
                                  str(tmp_path), '--force_yml', 'logger:print_freq=1000'],
                                 cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: states.is_dir() and any(p.suffix == '.state' for p in states.iterdir()), 'checkpoint', first)
        run = tmp_path / 'experiments' / 'same'
        folder = run.stat().st_ino
        second = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', 'train:total_iter=100',
                             cwd=tmp_path, check=False)
        assert second.returncode != 0 and 'Traceback' not in second.stdout, second.stdout[-3000:]
        errors = [line for line in second.stdout.splitlines() if line.startswith('error:')]
        assert len(errors) == 1 and re.fullmatch(
            rf"error: run 'same' is in use by process {first.pid} on {re.escape(os.uname().nodename)} \(started "
            rf'[-0-9: ]+\), which holds {re.escape(str(run))}.lock: wait for it to end or stop it, or give this run '
            r'another name \(--force_yml name=...\)', errors[0]), second.stdout[-3000:]
        assert run.stat().st_ino == folder and sorted(os.listdir(run.parent)) == ['same', 'same.lock']
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    text = (tmp_path / 'first.log').read_text()
    assert first.returncode == 128 + signal.SIGTERM and 'Traceback' not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    newest = max(int(p.stem) for p in states.glob('*.state'))
    assert last == (f'basicsr train: stopped by SIGTERM: the newest training state is {states / f"{newest}.state"} '
                    f'(iteration {newest}); resume with: basicsr train -opt {yml} --root {tmp_path} --force_yml '
                    'logger:print_freq=1000 --auto_resume'), last
    assert sorted(os.listdir(run.parent)) == ['same']  # the lock file went with the run


def test_sigterm_before_the_first_iteration_moves_the_archive_back(tmp_path, pairs, monkeypatch, capsys):
    """A real SIGTERM (a scheduler's preemption) between the archiving and the first iteration: one line, exit
    143, the previous run back where it was."""
    from mdrn_models.tools import pipelines

    def preempted(opt, logger):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises during the sleep
    yml = train_yml(tmp_path / 'train.yml', pairs, 'preempted', total_iter=2)
    _previous_run(tmp_path, 'preempted')
    before = tree(tmp_path)
    monkeypatch.setattr(pipeline_fixes, '_original_create_loaders', preempted)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert exc.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'basicsr train: stopped by SIGTERM before training started: the run folders are as they were before this '
        'launch; run the command again')
    assert tree(tmp_path) == before
    assert signal.getsignal(signal.SIGTERM) is not mdrn_cli.sigterm_as_interrupt  # the handler is the process's own again


KILLED_LAUNCH = """
import os, signal, sys
import mdrn_arch.basicsr_compat
from mdrn_models.integration import pipeline_fixes
from mdrn_models.tools import pipelines
pipeline_fixes._original_create_loaders = lambda opt, logger: os.kill(os.getpid(), signal.SIGKILL)
pipelines.run('train', ['-opt', sys.argv[1], '--root', sys.argv[2]], sys.argv[2])
"""


def test_the_next_launch_undoes_what_a_killed_launch_archived(tmp_path, pairs, monkeypatch):
    """SIGKILL (an OOM kill, power loss) after BasicSR archived the previous run and before the first iteration: the
    next launch of that run puts the folders back before it does anything, so ``--auto_resume`` finds the states."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'killed', total_iter=2)
    _previous_run(tmp_path, 'killed')
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, '-c', KILLED_LAUNCH, str(yml), str(tmp_path)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = sorted(os.listdir(tmp_path / 'experiments'))
    assert runs[:2] == ['killed', 'killed.lock'] and runs[2].startswith('killed_archived_') and len(runs) == 3, runs

    def stop(opt, logger):  # the next launch: what it finds before its own folders are made
        raise RuntimeError(sorted(os.listdir(tmp_path / 'experiments')))
    monkeypatch.setattr(pipeline_fixes, '_original_create_loaders', stop)
    with pytest.raises(RuntimeError) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    runs = exc.value.args[0]  # the killed launch's archive was moved back, then this launch archived it again
    assert runs[:2] == ['killed', 'killed.lock'] and runs[2].startswith('killed_archived_') and len(runs) == 3, runs
    assert tree(tmp_path) == before


def test_ctrl_c_during_training_says_what_was_saved_and_how_to_resume(tmp_path, pairs, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt) at iteration 3 of a run that saves every 2: exit 130, one line naming the state of
    iteration 2 and the command that resumes it, the run folder kept; that command then resumes from iteration 2."""
    from mdrn_models.tools import pipelines
    real, calls = pipeline_fixes.reduce_loss_dict, []

    def ctrl_c_at_3(self, loss_dict):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, loss_dict)
    monkeypatch.setattr(pipeline_fixes, 'reduce_loss_dict', ctrl_c_at_3)
    yml = train_yml(tmp_path / 'train.yml', pairs, 'ctrl_c', total_iter=6)
    argv = ['-opt', str(yml), '--root', str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', argv, str(tmp_path))
    assert exc.value.code == 128 + signal.SIGINT
    states = tmp_path / 'experiments' / 'ctrl_c' / 'training_states'
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f'basicsr train: stopped by SIGINT: the newest training state is {states / "2.state"} (iteration 2); resume '
        f'with: basicsr train -opt {yml} --root {tmp_path} --auto_resume')
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['ctrl_c']
    monkeypatch.setattr(pipeline_fixes, 'reduce_loss_dict', real)
    pipelines.run('train', [*argv, '--auto_resume'], str(tmp_path))
    final = torch.load(states / '6.state', weights_only=False)
    assert {int(s['step']) for s in final['optimizers'][0]['state'].values()} == {6}  # 2 saved + 4 resumed steps
