"""``basicsr demo``: the paper's story (teachers, plain/HADS/HMDS students, test and paired compare) at toy scale on
the CPU, each step a ``basicsr`` command on an ``options/demo_*.yml`` file. What it runs and writes: docs/demo.md.
"""
import csv
import math
import os
import re
import subprocess
import sys
import time
from os import path as osp

import yaml

from mdrn_cli import parsers
from mdrn_models.tools.compare_stats import interval_text, verdict
from mdrn_models.tools.gpu_session import run_basicsr

OPTIONS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'options')  # the repository's
TEACHERS = ('demo_teacher_big_gray_s70', 'demo_teacher_gray_s50')
STUDENTS = {
    'student σ=70, plain': 'demo_student_gray_s70',
    'student σ=70 + HADS (big teacher σ=70)': 'demo_hads_gray_s70',
    'student σ=70 + HMDS (teacher σ=50)': 'demo_hmds_gray_s50to70',
}
TEST = 'demo_test_gray_s70'


def basicsr(args, root, log):
    """Run ``basicsr`` as a subprocess (as users do) in ``root`` (the ``--root`` of train/test); exit with the log's
    tail on failure."""
    print(f'  basicsr {args[0]}: log in {log}', flush=True)  # (minutes for a training run: where to look meanwhile)
    returncode, out = run_basicsr([*args, *(['--root', root] if args[0] in ('train', 'test') else [])], log, root)
    if returncode:
        sys.exit(f'demo: `basicsr {" ".join(args)}` failed; the end of {log}:\n{out[-3000:]}')
    return out


def train(name, root, iters, logs):
    """Train ``options/<name>.yml`` (``iters`` overriding its ``total_iter``), or reuse a finished run of the same
    length, recorded in ``experiments/<name>/demo_total_iter.txt``."""
    option_file = osp.join(OPTIONS, f'{name}.yml')
    with open(option_file) as f:
        total_iter = iters or yaml.safe_load(f)['train']['total_iter']
    run = osp.join(root, 'experiments', name)
    latest, record = osp.join(run, 'models', 'net_g_latest.pth'), osp.join(run, 'demo_total_iter.txt')
    if osp.isfile(latest):
        done = 'an unknown number of'
        if osp.isfile(record):
            with open(record) as f:
                done = f.read().strip()
        if done != str(total_iter):  # a run of another length would make the table lie about what it compares
            sys.exit(f'demo: experiments/{name} was trained for {done} iterations, not {total_iter}: pass the same '
                     f'--iters to reuse it, or move experiments/{name} away to retrain')
        print(f'  reuse {latest} ({done} iterations; move experiments/{name} away to retrain)')
        return latest
    start = time.time()
    basicsr(['train', '-opt', option_file, '--force_yml', f'train:total_iter={total_iter}'], root,
            osp.join(logs, f'train_{name}.log'))
    with open(record, 'w') as f:
        f.write(f'{total_iter}\n')
    print(f'  trained {name} in {time.time() - start:.0f} s -> {latest}')
    return latest


def main(argv=None):
    parser = parsers.demo()
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:  # BasicSR trains nothing for total_iter <= 0 and saves the init
        parser.error(f'--iters must be a positive number of iterations, got {args.iters}')
    root = osp.abspath(args.root)
    logs = osp.join(root, 'results', 'demo_logs')
    os.makedirs(logs, exist_ok=True)
    start = time.time()

    print('1/4 demo data (scikit-image bundled images)')
    if osp.isdir(osp.join(root, 'datasets', 'demo')):
        print('  reuse datasets/demo')
    else:
        subprocess.run([sys.executable, '-m', 'datasets_prep.demo', '--out', osp.join(root, 'datasets', 'demo')],
                       check=True)
    print('2/4 teachers: ' + ', '.join(f'options/{name}.yml' for name in TEACHERS))
    for name in TEACHERS:
        train(name, root, args.iters, logs)
    print('3/4 students at sigma 70, same seed, data and iterations: ' +
          ', '.join(f'options/{name}.yml' for name in STUDENTS.values()))
    weights = {label: train(name, root, args.iters, logs) for label, name in STUDENTS.items()}

    print(f'4/4 test on the held-out demo images (identical noise): basicsr test -opt options/{TEST}.yml')
    rows = []
    for label, weight in weights.items():
        name = f'{TEST}_{osp.basename(osp.dirname(osp.dirname(weight)))}'
        out = basicsr(['test', '-opt', osp.join(OPTIONS, f'{TEST}.yml'), '--force_yml',
                       f'path:pretrain_network_g={weight}', f'name={name}', 'val:save_img=true'], root,
                      osp.join(logs, f'{name}.log'))
        psnr, ssim = (float(re.findall(rf'# {m}: ([-\d.]+)', out)[-1]) for m in ('psnr', 'ssim'))
        rows.append((label, psnr, ssim, osp.join('results', name, 'visualization')))

    # the paired differences to the plain student, on the same images and three noise draws (compare --baseline)
    keys = ('plain', 'HADS', 'HMDS')  # compare's names of the students, in STUDENTS' order
    compare_out = osp.join(root, 'results', 'demo_compare')
    basicsr(['compare', '--models', *(f'{k}={w}' for k, w in zip(keys, weights.values())), '--baseline', 'plain',
             '--sets', f"demo_val={osp.join(root, 'datasets', 'demo', 'val')}", '--sigmas', '70', '--noise-seeds',
             '0', '1', '2', '--out', compare_out, '--force'], root, osp.join(logs, 'demo_compare.log'))
    with open(osp.join(compare_out, 'compare.csv')) as f:
        paired = {r['model']: r for r in csv.DictReader(f)}
    print('\n| model | PSNR (dB) | SSIM | ΔPSNR vs plain [95% CI], 3 noise draws | denoised images |\n'
          '| --- | --- | --- | --- | --- |')
    for (label, psnr, ssim, images), key in zip(rows, keys):
        r = paired[key]
        low, high = (float(r[k]) if r[k] else math.nan for k in ('d_psnr_low', 'd_psnr_high'))
        delta = '—' if not r['d_psnr'] else (f"{interval_text(float(r['d_psnr']), low, high, 2)}, {r['improved']} "
                                             f"images better: {verdict({'low': low, 'high': high})}")
        print(f'| {label} | {psnr:.2f} | {ssim:.4f} | {delta} | {images} |')
    print(f'Paired table, per-image scores and figures: {compare_out}')
    print(f'\nTensorBoard: tensorboard --logdir {osp.join(root, "tb_logger")}   logs: {logs}')
    print(f'demo finished in {time.time() - start:.0f} s')
