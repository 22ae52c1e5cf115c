"""The README's demo command end to end, at 2 iterations per run (the real demo uses the option files' 300)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def run_demo(root, iters):
    return subprocess.run([sys.executable, '-m', 'mdrn_cli', 'demo', '--root', str(root), '--iters', str(iters)],
                          cwd=root, env={**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': ''},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)


@pytest.mark.slow
def test_demo_runs_the_whole_story(tmp_path):
    proc = run_demo(tmp_path, 2)
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = re.findall(r'^\| (student [^|]+) \| ([\d.]+) \| ([\d.]+) \|', proc.stdout, re.M)
    assert [r[0].strip() for r in rows] == ['student σ=70, plain', 'student σ=70 + HADS (big teacher σ=70)',
                                            'student σ=70 + HMDS (teacher σ=50)']
    assert all(5 < float(psnr) < 60 and 0 < float(ssim) <= 1 for _, psnr, ssim in rows)
    # the demo's two validation images are too few for an interval: the difference is called a hint
    paired = re.findall(r'^\| student σ=70 \+ H[AM]DS [^|]+ \| [\d.]+ \| [\d.]+ \| [-+][\d.]+, \d/2 images better: '
                        r'too few images for an interval \(fewer than 10\): a hint \|', proc.stdout, re.M)
    assert len(paired) == 2, proc.stdout[-3000:]
    assert (tmp_path / 'results' / 'demo_compare' / 'per_image.csv').is_file()
    for name in ('demo_teacher_big_gray_s70', 'demo_teacher_gray_s50', 'demo_student_gray_s70', 'demo_hads_gray_s70',
                 'demo_hmds_gray_s50to70'):
        assert (tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
    assert list((tmp_path / 'results').glob('demo_test_gray_s70_*/visualization/demo_val/*.png'))
    # each table row is the test of its own student's weight (not, e.g., the plain student three times)
    for name in ('demo_student_gray_s70', 'demo_hads_gray_s70', 'demo_hmds_gray_s50to70'):
        log = (tmp_path / 'results' / 'demo_logs' / f'demo_test_gray_s70_{name}.log').read_text()
        loaded = re.findall(r'Loading \S+ model from (\S+), with param key', log)
        assert loaded == [str(tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth')], (name, loaded)
    # a rerun asking for another length must not present the 2-iteration runs as its result
    proc = run_demo(tmp_path, 3)
    assert proc.returncode != 0 and 'demo: experiments/demo_teacher_big_gray_s70 was trained for 2 iterations, not 3' \
        in proc.stdout, proc.stdout[-2000:]


def test_demo_refuses_a_run_length_that_trains_nothing(tmp_path):
    # total_iter <= 0: BasicSR would save the random init as net_g_latest.pth and the table would score it
    for iters in (0, -1):
        proc = run_demo(tmp_path, iters)
        assert proc.returncode == 2 and f'--iters must be a positive number of iterations, got {iters}' in proc.stdout
    assert list(tmp_path.iterdir()) == []
