"""glibc keeps freed memory in the command-line entry points (``mdrn_models/tools/malloc_tuning.py``), never on import."""
import os
import platform
import subprocess
import sys

import pytest

import mdrn_cli as cli

from mdrn_models.tools import compare

from mdrn_models.tools import denoise

from mdrn_models.tools import malloc_tuning
from conftest import REPO

FREE_64MIB = """
import os, torch
from mdrn_models.tools.malloc_tuning import keep_freed_memory
applied = keep_freed_memory()
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
x = torch.ones(2**24)
before = rss()
del x
print(applied, (before - rss()) // 2**20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt settings are glibc-only')
@pytest.mark.parametrize('opt_out, applied, returned_mib', [(None, 'True', 0), ('1', 'False', 64)])
def test_freed_memory_stays_in_the_process_unless_opted_out(opt_out, applied, returned_mib):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    if opt_out:
        env['MDRN_DEFAULT_MALLOC'] = opt_out
    out = subprocess.run([sys.executable, '-c', FREE_64MIB], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [applied, str(returned_mib)]


@pytest.mark.parametrize('main, argv', [
    (cli.main, ['test', '-opt', 'missing.yml']),
    (compare.main, ['--models', 'a=b.yml', '--sets', 'c', '--out', 'o', '--zoom', '0']),
    (denoise.main, ['-opt', 'missing.yml', '-i', 'x.png', '-o', 'y.png', '--tile', '3']),
])
def test_command_line_entry_points_apply_it(main, argv, monkeypatch):
    calls = []
    monkeypatch.setattr(malloc_tuning, 'keep_freed_memory', lambda: calls.append(1))
    with pytest.raises(SystemExit):
        main(argv)
    assert calls
