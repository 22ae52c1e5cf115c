"""``basicsr gpu-session``: measure and train on a GPU you have for a short while, as one prepared command. Each step
is a ``basicsr`` subprocess within its share of ``--minutes``; steps, outputs and ``--tiny``: docs/training.md (A short
session on a rented or shared GPU).
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time

import yaml

from mdrn_cli import parsers

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SETS = ('Train400', 'Set12', 'BSD68')
FULL = {'sizes': [256, 512, 1024], 'modes': ['fp32', 'channels_last', 'amp', 'compile'],
        'models': ['DnCNN', 'FFDNet', 'MDRN', 'MDRN-2B'], 'repeats': [], 'batch': 16, 'max_batch': 1024,
        'crop': 64, 'ddp_iters': 20, 'max_iters': None, 'workers': 4, 'reserve_s': 150}
TINY = {'sizes': [32], 'modes': ['fp32', 'channels_last'], 'models': ['MDRN-2B'], 'repeats': ['--repeats', '1'],
        'batch': 2, 'max_batch': 4, 'crop': 32, 'ddp_iters': 2, 'max_iters': 4, 'workers': 0, 'reserve_s': 0}
# each step's share of --minutes; training gets the time the others leave, less what test and export need after it
SHARES = {'inference benchmark': 0.15, 'training-step benchmark': 0.12, 'DDP distillation + resume': 0.13,
          'test': 0.08, 'export': 0.02}
# what CUDA, cuDNN and cuBLAS say when a batch does not fit (only torch's own error is an OutOfMemoryError)
OUT_OF_MEMORY = ('out of memory', 'CUDNN_STATUS_ALLOC_FAILED', 'CUBLAS_STATUS_ALLOC_FAILED',
                 'CUDNN_STATUS_NOT_SUPPORTED', 'CUDNN_STATUS_MAPPING_ERROR')


def is_out_of_memory(exc):
    """Whether ``exc`` means "this batch is too big" on a CUDA device (cuDNN gives up on batches too large for its
    workspace with NOT_SUPPORTED)."""
    import torch
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY))


def run_basicsr(args, log, cwd, env=None, timeout=None, launcher=('-m', 'mdrn_cli'), echo=False):
    """Run ``basicsr ARGS`` as a subprocess (``launcher``: how Python starts it, e.g. under torchrun) in ``cwd``
    within ``timeout``, its output (after its command line with ``echo``) in ``log``; returns (exit status, the log's
    text)."""
    cmd = [sys.executable, *launcher, *map(str, args)]
    with open(log, 'w') as f:
        if echo:
            f.write(' '.join(cmd) + '\n')
            f.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    with open(log) as f:
        return proc.returncode, f.read()


def read_options(name):
    with open(osp.join(REPO, 'options', name)) as f:
        return yaml.safe_load(f)


def write_options(opt, folder, name):
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


class StepTimedOut(RuntimeError):
    """A step that used up its share of the session; what it wrote so far is kept."""


class SessionError(ValueError):
    """A bad argument, reported in one line before anything is run or written."""


def check_args(args):
    for name in SETS:
        folder = osp.join(args.data, name)
        if not osp.isdir(folder) or not any(f.lower().endswith('.png') for f in os.listdir(folder)):
            raise SessionError(f'--data {args.data}: {folder} is not a folder of PNG images (copy it from '
                               f'../shared/datasets/{"train" if name == "Train400" else "test"}/{name})')
    if osp.exists(args.out) and (not osp.isdir(args.out) or os.listdir(args.out)):
        raise SessionError(f'--out {args.out} exists and is not an empty folder: choose a new one')
    if not args.minutes > 0:
        raise SessionError(f'--minutes must be positive, got {args.minutes:g}')
    from mdrn_models.tools.model_loading import pick_device
    return pick_device(args.device or ('cpu' if args.tiny else None), SessionError).type


def amp_mode(device):
    """The train.amp the session uses: bf16 where the device runs it natively, fp16 on older GPUs, else none."""
    from mdrn_arch.capabilities import cpu_has_native_bf16, cuda_has_native_bf16
    if device == 'cuda':
        return 'bf16' if cuda_has_native_bf16() else 'fp16'
    return 'bf16' if cpu_has_native_bf16() else None


class Session:
    def __init__(self, args, device):
        self.args, self.device, self.cfg = args, device, TINY if args.tiny else FULL
        self.out, self.data = osp.abspath(args.out), osp.abspath(args.data)
        self.deadline = time.time() + 60 * args.minutes
        self.step_deadline = self.deadline
        self.amp = amp_mode(device)
        self.num_gpu = 1 if device == 'cuda' else 0
        self.steps = []  # (name, status, seconds, detail)
        self.facts = {}

    def left(self):
        return self.step_deadline - time.time()

    def basicsr(self, args, log, timeout=None, launcher=('-m', 'mdrn_cli')):
        """Run ``basicsr ARGS`` (under ``launcher``, e.g. torchrun) within ``timeout`` (default: the step's time
        left); raise on failure or timeout."""
        env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
        if self.device == 'cpu':
            env['CUDA_VISIBLE_DEVICES'] = ''
        limit = max(timeout or self.left(), 1)
        try:
            returncode, text = run_basicsr(args, log, self.out, env, limit, launcher, echo=True)
        except subprocess.TimeoutExpired:
            raise StepTimedOut(f'stopped after its {limit:.0f} s (see {log})') from None
        if returncode:
            raise RuntimeError(f'exit {returncode}: {text.strip().splitlines()[-1]} (see {log})')
        return text

    def step(self, name, fn):
        """Run step ``fn`` within its share of the session (training: what is left before the time test and export
        need) and record its status."""
        start = time.time()
        share = SHARES.get(name)
        reserve = 0 if share else 60 * self.args.minutes * sum(SHARES[k] for k in ('test', 'export'))
        self.step_deadline = min(self.deadline - reserve, start + 60 * self.args.minutes * (share or 1))
        print(f'[{time.strftime("%H:%M:%S")}] {name} ({self.left() / 60:.1f} min for it)', flush=True)
        try:
            detail, status = fn() or '', 'ok'
        except StepTimedOut as exc:
            detail, status = f'{exc}; what it wrote so far is kept', 'timed out'
        except Exception as exc:  # noqa: BLE001  (a failed step is recorded; the session goes on)
            detail, status = f'{type(exc).__name__}: {exc}'.splitlines()[0], 'failed'
        if status != 'ok':
            print(f'  {status}: {detail}', flush=True)
        self.steps.append((name, status, time.time() - start, detail))

    # ------------------------------------------------------------------------------------------------------ steps
    def inference_benchmark(self):
        out = osp.join(self.out, 'benchmark_inference.md')
        self.basicsr(['benchmark', '--device', self.device, '--sizes', *self.cfg['sizes'], '--modes',
                      *self.cfg['modes'], '--models', *self.cfg['models'], *self.cfg['repeats'], '--out', out],
                     osp.join(self.out, 'benchmark_inference.log'))  # it rewrites --out after each size
        return out

    def train_benchmark(self):
        """Training-step times at batch 16, then doubling while a batch fits and the step has time; the table is
        rewritten after each batch."""
        import gc
        import torch
        from mdrn_models.tools.benchmark import bench_train
        from mdrn_models.tools.benchmark_report import device_desc
        device = torch.device(self.device)
        out = osp.join(self.out, 'benchmark_train.md')
        rows, batch, too_big = {}, self.cfg['batch'], None
        while batch <= self.cfg['max_batch'] and self.left() > 0:
            try:
                rows[batch] = bench_train(device, batch, self.cfg['crop'], 3, log=lambda *_: None, amp=self.amp)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                too_big = batch
            gc.collect()  # the failed try's tensors, held by its traceback until now
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            self._write_train_table(out, rows, too_big, device_desc(device))
            if too_big:
                break
            batch *= 2
        if not rows:
            raise RuntimeError(f'no training batch fits this device: batch {too_big} ran out of memory'
                               if too_big else 'no time was left for one training batch')
        self.facts['largest_batch'] = max(rows)
        if self.left() <= 0 and not too_big and batch <= self.cfg['max_batch']:
            raise StepTimedOut(f'its time ran out after batch {max(rows)} ({out})')
        return out

    def _write_train_table(self, out, rows, too_big, device):
        lines = [f'Training step of MDRN-2B (plain, HADS with the MDRN teacher, HMDS with an MDRN-2B teacher), '
                 f'{self.cfg["crop"]}x{self.cfg["crop"]} crops, train.amp {self.amp or "off"}, Adam; {device}. '
                 f'Seconds per step: min (median) of 3 after a warm-up; batches doubling from {self.cfg["batch"]} '
                 f'(at most {self.cfg["max_batch"]}) while they fit and the step has time.'
                 + (f' Batch {too_big} ran out of memory.' if too_big else ''),
                 '', '| batch | plain | HADS | HMDS | plain crops/s |', '|---:|---:|---:|---:|---:|']
        for b, r in sorted(rows.items()):
            lines.append(f'| {b} | ' + ' | '.join(f'{r[k][0]:.4f} ({r[k][1]:.4f})' for k in ('plain', 'HADS', 'HMDS'))
                         + f' | {b / r["plain"][0]:.0f} |')
        with open(out, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def ddp(self):
        import torch
        from basicsr.archs import build_network
        folder = osp.join(self.out, 'ddp')
        os.makedirs(folder)
        student = {'type': 'MDRN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 16, 'num_block': 1, 'num_level': 2}
        teacher = {**student, 'num_block': 2}
        torch.manual_seed(0)
        torch.save({'params': build_network(teacher).state_dict()}, osp.join(folder, 'teacher.pth'))
        iters = self.cfg['ddp_iters']
        opt = {'name': 'ddp_hkd', 'model_type': 'HKDModel', 'scale': 1, 'num_gpu': self.num_gpu,
               'manual_seed': 0, 'datasets': {'train': self._train_set(32, 4, iters * 2)},
               'network_g': student, 'network_t': teacher,
               'path': {'pretrain_network_t': osp.join(folder, 'teacher.pth')},
               'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4},
                         'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 6], 'gamma': 0.5},
                         'total_iter': iters, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                         'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, 'amp': self.amp},
               'logger': {'print_freq': 1, 'save_checkpoint_freq': iters, 'use_tb_logger': False}}
        yml = write_options(opt, folder, 'hkd_tiny.yml')
        launcher = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', '-m', 'mdrn_cli']
        train_args = ['train', '-opt', yml, '--launcher', 'pytorch', '--root', folder]
        self.basicsr(train_args, osp.join(folder, 'train.log'), launcher=launcher, timeout=0.5 * self.left())
        log = self.basicsr([*train_args, '--auto_resume', '--force_yml', f'train:total_iter={2 * iters}'],
                           osp.join(folder, 'resume.log'), launcher=launcher)
        if f'iter: {iters}.' not in log or not osp.isfile(osp.join(folder, 'experiments', 'ddp_hkd', 'models',
                                                                      f'net_g_{2 * iters}.pth')):
            raise RuntimeError(f'the resumed run did not continue from iteration {iters} to {2 * iters} (see '
                               f'{folder}/resume.log)')
        return f'{iters} iterations, resumed to {2 * iters}'

    def _train_set(self, crop, batch, iters):
        return {'name': 'Train400', 'type': 'AWGNDenoisingDataset', 'dataroot_gt': osp.join(self.data, 'Train400'),
                'io_backend': {'type': 'disk'}, 'channels': 1, 'sigma': 25, 'gt_size': crop, 'use_hflip': True,
                'use_rot': True, 'use_shuffle': True, 'num_worker_per_gpu': self.cfg['workers'],
                'batch_size_per_gpu': batch, 'pin_memory': self.device == 'cuda',
                'dataset_enlarge_ratio': max(1, math.ceil(iters * batch / len(os.listdir(osp.join(self.data,
                                                                                                   'Train400')))))}

    def train(self):
        import torch
        from mdrn_models.tools.benchmark import bench_train
        batch, crop = self.cfg['batch'], self.cfg['crop']
        seconds = bench_train(torch.device(self.device), batch, crop, 3, log=lambda *_: None, amp=self.amp,
                              student='MDRN', kinds=('plain',))['plain'][1]
        budget = self.left() - self.cfg['reserve_s']
        iters = max(1, int(0.8 * budget / seconds))  # 0.8: data loading, logging, the final validation and save
        iters = min(iters, self.cfg['max_iters'] or iters)
        opt = read_options('train_mdrn_gray_s25_train400.yml')
        opt.update(name='gpu_mdrn_gray_s25_train400', model_type='DenoiseModel', num_gpu=self.num_gpu)
        opt['datasets']['train'] = self._train_set(crop, batch, iters)
        for ds in opt['datasets'].values():
            if ds is not opt['datasets']['train']:
                ds['dataroot_gt'] = osp.join(self.data, 'Set12')
        milestones = sorted({max(1, iters * k // 5) for k in range(1, 5)})
        opt['train'].update(total_iter=iters, warmup_iter=-1, amp=self.amp, ema_decay=0,
                            optim_g={'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.999]},
                            scheduler={'type': 'MultiStepLR', 'milestones': milestones, 'gamma': 0.5})
        opt['val']['val_freq'] = iters
        opt['logger'].update(print_freq=max(1, min(100, iters // 20)), save_checkpoint_freq=max(1, iters // 5))
        folder = osp.join(self.out, 'train')
        yml = write_options(opt, folder, 'train_mdrn_gray_s25_gpu.yml')
        self.facts['train'] = {'iterations': iters, 'batch': batch, 'crop': crop, 'lr': 1e-4,
                               'milestones': milestones, 'amp': self.amp, 'measured_s_per_step': seconds}
        self.basicsr(['train', '-opt', yml, '--root', folder], osp.join(folder, 'train.log'),
                     timeout=self.left() - self.cfg['reserve_s'] / 2)
        return f'{iters} iterations of batch {batch} ({seconds:.3f} s per step measured)'

    def latest_checkpoint(self):
        models = osp.join(self.out, 'train', 'experiments', 'gpu_mdrn_gray_s25_train400', 'models')
        found = [n for n in os.listdir(models) if re.fullmatch(r'net_g_\d+\.pth', n)] if osp.isdir(models) else []
        if not found:
            raise RuntimeError(f'no checkpoint in {models}: training saved none')
        return osp.join(models, max(found, key=lambda n: int(n[6:-4])))

    def test(self):
        ckpt = self.latest_checkpoint()
        opt = read_options('test_mdrn_gray_s25_train400.yml')
        opt.update(name='gpu_mdrn_gray_s25', num_gpu=self.num_gpu)
        opt['path']['pretrain_network_g'] = ckpt
        for ds in opt['datasets'].values():
            ds['dataroot_gt'] = osp.join(self.data, ds['name'])
        folder = osp.join(self.out, 'test')
        yml = write_options(opt, folder, 'test_mdrn_gray_s25_gpu.yml')
        log = self.basicsr(['test', '-opt', yml, '--root', folder], osp.join(folder, 'test.log'))
        scores = re.findall(r'Validation (\S+)\n\s+# psnr: ([\d.]+).*\n\s+# ssim: ([\d.]+)', log)
        self.facts['test'] = {name: {'psnr': float(p), 'ssim': float(s)} for name, p, s in scores}
        return ', '.join(f'{n}: {p} dB / {s}' for n, p, s in scores)

    def export(self):
        folder = osp.join(self.out, 'weights')
        os.makedirs(folder)
        out = osp.join(folder, 'mdrn_gray_s25_gpu.pth')
        self.basicsr(['export-weights', self.latest_checkpoint(), out], osp.join(folder, 'export.log'))
        return out

    def summary(self):
        from mdrn_models.tools.benchmark_report import device_desc
        import torch
        lines = [f'# GPU session: {device_desc(torch.device(self.device))}', '',
                 f'`basicsr gpu-session --data {self.args.data} --out {self.args.out} --minutes {self.args.minutes:g}'
                 f'{" --tiny" if self.args.tiny else ""}`', '', '| step | status | seconds | detail |',
                 '|---|---|---:|---|']
        lines += [f'| {n} | {s} | {t:.0f} | {d} |' for n, s, t, d in self.steps]
        lines += ['', '```json', json.dumps(self.facts, indent=2), '```']
        text = '\n'.join(lines) + '\n'
        with open(osp.join(self.out, 'summary.md'), 'w') as f:
            f.write(text)
        return text


def main(argv=None):
    parser = parsers.gpu_session()
    args = parser.parse_args(argv)
    try:
        device = check_args(args)
    except SessionError as exc:
        parser.exit(2, f'error: {exc}\n')
    os.makedirs(args.out, exist_ok=True)
    session = Session(args, device)
    for name, fn in (('inference benchmark', session.inference_benchmark), ('training-step benchmark',
                     session.train_benchmark), ('DDP distillation + resume', session.ddp), ('training', session.train),
                     ('test', session.test), ('export', session.export)):
        session.step(name, fn)
        text = session.summary()  # after every step: a session cut short keeps the steps it finished
    print(text)
    return 1 if any(status != 'ok' for _, status, _, _ in session.steps) else 0
