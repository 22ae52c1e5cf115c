"""The ``basicsr`` command's front end (``mdrn_cli``): every sub-command's ``--help`` lists its own flags, help
imports neither torch nor basicsr, and the default torch threads."""
import importlib.util
import os
import resource
import subprocess
import sys
from types import SimpleNamespace

import pytest

import mdrn_cli
from conftest import REPO
from mdrn_cli import parsers

BASICSR_FLAGS = ['-opt', '--launcher', '--auto_resume', '--debug', '--local_rank', '--force_yml', '--root']
FLAGS = {
    'train': BASICSR_FLAGS,
    'test': BASICSR_FLAGS,
    'denoise': ['-opt', '--input', '--output', '--add_noise', '--sigma', '--seed', '--tile', '--force'],
    'compare': ['--models', '--sets', '--sigmas', '--out', '--channels', '--noise-seed', '--noise-seeds', '--baseline',
                '--max-images',
                '--figures-per-set', '--crop', '--crop-size', '--zoom', '--flops-size', '--device', '--amp', '--force'],
    'compare-seeds': ['DIR', '--baseline', '--models', '--sets', '--brief', '--update'],
    'benchmark': ['--sizes', '--models', '--modes', '--repeats', '--device', '--threads', '--keep-freed-memory',
                  '--breakdown', '--train', '--train-only', '--train-batch', '--train-size', '--out', '--force'],
    'export': ['-opt', '--output', '--format', '--force'],
    'export-weights': ['ckpt', 'out', '--key', '--dtype', '--force'],
    'peers': ['--mat', '--arch', '--out', '--force'],
    'demo': ['--root', '--iters'],
    'gpu-session': ['--data', '--out', '--minutes', '--tiny', '--device'],
}


def test_every_command_has_its_flags_listed():
    assert list(FLAGS) == list(parsers.COMMANDS)


@pytest.mark.parametrize('command', FLAGS)
def test_command_help_lists_its_own_flags(command, capsys):
    if command == 'export' and importlib.util.find_spec('mdrn_models.tools.export') is None:
        pytest.skip('mdrn_models/tools/export.py is not there yet')
    with pytest.raises(SystemExit) as exc:
        mdrn_cli.main([command, '--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: basicsr {command} ')
    assert [flag for flag in FLAGS[command] if f' {flag}' not in out] == []


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        mdrn_cli.main(['--help'])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith('usage: basicsr ')
    assert [c for c in parsers.COMMANDS if f'\n  {c} ' not in out] == []


def test_help_imports_neither_torch_nor_basicsr():
    """`basicsr --help` and `basicsr train --help` in one process (what the console script runs: mdrn_cli.main)."""
    code = ('import sys, mdrn_cli\n'
            'for argv in (["--help"], ["train", "--help"]):\n'
            '    try:\n'
            '        mdrn_cli.main(argv)\n'
            '    except SystemExit as exc:\n'
            '        assert exc.code == 0, exc.code\n'
            'print("heavy:", *sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "basicsr", '
            '"numpy", "cv2", "mdrn_models", "mdrn_arch"}))\n')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)},
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f'CPU time of `basicsr --help` + `basicsr train --help` (one process): {cpu:.2f} s')  # reported only
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'usage: basicsr [-h]' in proc.stdout and 'usage: basicsr train [-h] -opt' in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == 'heavy:'


def test_the_command_table_is_the_dispatch_and_the_help():
    """One table: every command's module exists and its parser is the one the command parses with."""
    for name, command in parsers.COMMANDS.items():
        assert importlib.util.find_spec(command.module) is not None, name
        assert command.parser().prog == f'basicsr {name}'


def test_physical_cores_counts_hyperthreads_once(tmp_path, monkeypatch):
    n = mdrn_cli.physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    # 4 CPUs of 2 cores with 2 hyperthreads each (siblings 0,2 and 1,3); CPU 5 has no topology entry
    for cpu, siblings in {0: '0,2', 1: '1,3', 2: '0,2', 3: '1,3'}.items():
        (tmp_path / f'cpu{cpu}' / 'topology').mkdir(parents=True)
        (tmp_path / f'cpu{cpu}' / 'topology' / 'thread_siblings_list').write_text(siblings + '\n')
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3})
    assert mdrn_cli.physical_cores(sysfs=str(tmp_path)) == 2
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 2})  # one core's two hyperthreads
    assert mdrn_cli.physical_cores(sysfs=str(tmp_path)) == 1
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 5})
    assert mdrn_cli.physical_cores(sysfs=str(tmp_path)) == 3


def test_omp_num_threads_wins_over_the_physical_cores(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, 'torch', SimpleNamespace(set_num_threads=calls.append))
    env = {'OMP_NUM_THREADS': '3'}
    assert mdrn_cli.set_default_threads(env) is None
    assert env == {'OMP_NUM_THREADS': '3'} and calls == []
    env = {}
    n = mdrn_cli.physical_cores()
    assert mdrn_cli.set_default_threads(env) == n
    assert env == {'OMP_NUM_THREADS': str(n)} and calls == [n]  # torch already imported: told directly too
