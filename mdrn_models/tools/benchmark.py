"""``basicsr benchmark``: latency, throughput (GMAC/s) and peak memory of denoisers measured side by side in one run
(rounds interleave every model), and the training-step time of plain vs HADS vs HMDS. Flags, method and results:
docs/benchmarks.md."""
import contextlib
import os
import statistics
import sys
import tempfile
import time
from copy import deepcopy

import torch

import mdrn_models  # noqa: F401  (compat alias + registry)
from basicsr.archs import build_network

from mdrn_arch import enable_fused_inference
from mdrn_cli import parsers
from mdrn_models.tools import malloc_tuning
from mdrn_models.tools.benchmark_probes import OpTimer, PeakLiveTensors, sync as _sync
from mdrn_models.tools.benchmark_report import label, report
from mdrn_arch.arch_util import in_channels
from mdrn_models.tools.model_loading import amp_note, build_model, count_flops, pick_device
from mdrn_models.models.denoise_model import network_forward
from mdrn_models.models.training_step import inference_autocast
from mdrn_models.utils.compiling import compile_static
from mdrn_models.utils.messages import first_repeat

MODELS = {
    'DnCNN': {'type': 'DnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_conv': 17},
    'FFDNet': {'type': 'FFDNet', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_conv': 15, 'sigma': 25},
    'MDRN': {'type': 'MDRN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_block': 8, 'num_level': 3},
    'MDRN-2B': {'type': 'MDRN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_block': 2, 'num_level': 3},
}


def build(name):
    """A built-in model (random weights, seed 0), or the network of ``NAME=PATH`` (an option file or checkpoint)."""
    if '=' in name:
        net, _, opt = build_model(name.split('=', 1)[1])  # ModelLoadError (a ValueError): one line
        return network_forward(net, opt)
    base = name.removesuffix('-unfused')  # MDRN only: the forward without the oneDNN fused inference path
    if base not in MODELS:
        raise ValueError(f"unknown model '{name}': choose from {list(MODELS)}, MDRN ones with -unfused, or "
                         'give NAME=PATH (a BasicSR option file or checkpoint).')
    if base != name and MODELS[base]['type'] != 'MDRN':
        raise ValueError(f"'{name}': only MDRN models have the -unfused variant.")
    torch.manual_seed(0)
    net = build_network(deepcopy(MODELS[base]))
    if base == name:
        enable_fused_inference(net)
    return net.eval()


# ------------------------------------------------------------------------------------------------------ measuring
def image(net, size, device):
    """A batch-1 random image of the channels ``net`` takes (gray when it cannot be told)."""
    return torch.rand(1, in_channels(net) or 1, size, size, device=device)


def count_macs(net, size, device):
    return count_flops(net, in_channels(net) or 1, size, device) / 2


def prepare(net, mode, device):
    """-> callable(x) for the mode, and the input memory format."""
    fmt = torch.channels_last if mode in ('channels_last', 'amp') else torch.contiguous_format
    net = net.to(device)
    if fmt == torch.channels_last:
        net = net.to(memory_format=fmt)
    if mode == 'compile':  # static: each size compiles its own graph (the row times that size's graph)
        net = compile_static(net)

    def run(x):
        with torch.no_grad(), inference_autocast(device.type, mode == 'amp'):
            return net(x)
    return run, fmt


class OnnxRuntimeModels:
    """Mode ``onnxruntime``: each model exported to ONNX once (as ``basicsr export`` does, into a temporary folder)
    and kept as one onnxruntime CPU session for every size."""

    def __init__(self):
        self.folder, self.runs = None, {}

    def fn(self, name):
        """-> callable(x) running ``name``'s ONNX export (FFDNet fed its ``sigma``)."""
        if name not in self.runs:
            from mdrn_models.tools import export
            if self.folder is None:
                self.folder = tempfile.TemporaryDirectory(prefix='bench_onnx_')
            net = build(name)
            module = export.export_module(net)
            sigma = float(net.sigma) if export.takes_sigma(net) else None
            path = os.path.join(self.folder.name, f'model{len(self.runs)}.onnx')
            export.export_onnx(module, path, in_channels(net) or 1, sigma is not None)
            run = export.load_exported(path, 'onnx')
            self.runs[name] = lambda x: run(x, sigma)
        return self.runs[name]

    def close(self):
        self.runs.clear()
        if self.folder is not None:
            self.folder.cleanup()


def bench_inference(names, modes, sizes, repeats, device, log, on_rows):
    """The inference rows; ``on_rows(rows so far)`` is called after each size (``--out`` is rewritten then, so a
    benchmark stopped part-way keeps the sizes it finished)."""
    rows = []
    with contextlib.closing(OnnxRuntimeModels()) as ort_models:
        for size in sizes:
            n_rep = repeats.get(size, 1)
            runs = []
            for name in names:
                net = build(name)
                macs = count_macs(net, size, torch.device('cpu')) if size <= 512 else \
                    count_macs(net, 256, torch.device('cpu')) * (size / 256) ** 2  # convs only: MACs scale with pixels
                for mode in modes:
                    if mode == 'onnxruntime':  # CPU only (check_args)
                        fn, fmt = ort_models.fn(name), torch.contiguous_format
                    else:
                        fn, fmt = prepare(build(name), mode, device)
                    x = image(net, size, device).contiguous(memory_format=fmt)
                    # warm-up forward, measuring peak memory
                    if mode == 'onnxruntime':  # its allocations are onnxruntime's own, not torch tensors
                        fn(x)
                        peak = None
                    elif device.type == 'cuda':
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                        fn(x)
                        _sync(device)
                        peak = torch.cuda.max_memory_allocated() - base
                    else:
                        tracker = PeakLiveTensors()
                        with tracker:
                            fn(x)
                        peak = tracker.peak
                    runs.append({'model': label(name), 'mode': mode, 'size': size, 'fn': fn, 'x': x, 'macs': macs,
                                 'peak': peak, 'times': [], 'params': sum(p.numel() for p in net.parameters())})
            for r in range(n_rep):
                for run in runs:
                    _sync(device)
                    t0 = time.perf_counter()
                    run['fn'](run['x'])
                    _sync(device)
                    run['times'].append(time.perf_counter() - t0)
                log(f'  {size}x{size}: round {r + 1}/{n_rep} done')
            for run in runs:
                t = min(run['times'])
                rows.append({k: run[k] for k in ('model', 'mode', 'size', 'macs', 'peak', 'params')} |
                            {'lat': t, 'median': statistics.median(run['times']), 'n': len(run['times'])})
                del run['fn'], run['x']
            on_rows(rows)
    return rows


def bench_breakdown(names, sizes, device, log=print):
    """{(model, size): {kind: [calls, seconds, MACs]}} of one fp32 forward each (after a warm-up), under OpTimer."""
    result = {}
    for size in sizes:
        for name in names:
            net = build(name)
            fn, _ = prepare(net, 'fp32', device)
            x = image(net, size, device)
            fn(x)
            timer = OpTimer(device)
            with timer:
                fn(x)
            result[label(name), size] = timer.groups
        log(f'  {size}x{size}: breakdown done')
    return result


# ------------------------------------------------------------------------------------------------- training steps
def bench_train(device, batch, size, repeats, log=print, amp=None, student='MDRN-2B', kinds=('plain', 'HADS', 'HMDS')):
    """Seconds per training step (min, median over ``repeats`` after a warm-up) of ``student`` alone and distilled
    (HADS: MDRN teacher, HMDS: MDRN-2B teacher), at ``batch`` crops of ``size``, under ``train.amp`` ``amp``."""
    from basicsr.models import build_model
    teachers = {'HADS': MODELS['MDRN'], 'HMDS': MODELS['MDRN-2B']}
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for kind in kinds:
            opt = {'name': f'bench_{kind}', 'model_type': 'DenoiseModel' if kind == 'plain' else 'HKDModel',
                   'is_train': True, 'dist': False, 'num_gpu': 1 if device.type == 'cuda' else 0, 'rank': 0,
                   'world_size': 1, 'network_g': deepcopy(MODELS[student]),
                   'path': {'models': tmp, 'training_states': tmp, 'resume_state': None},
                   'datasets': {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': size, 'sigma': 50,
                                          **({'sigma_teacher': 25} if kind == 'HMDS' else {})}},
                   'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4},
                             'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6], 'gamma': 0.5},
                             'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, 'amp': amp},
                   'val': {'val_freq': 10**6, 'save_img': False}}
            if kind != 'plain':
                ckpt = os.path.join(tmp, f'teacher_{kind}.pth')
                torch.manual_seed(1)
                torch.save({'params': build_network(deepcopy(teachers[kind])).state_dict()}, ckpt)
                opt['network_t'] = deepcopy(teachers[kind])
                opt['path']['pretrain_network_t'] = ckpt
                opt['train']['kd_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0,
                                          'teacher_input': 'lq_teacher' if kind == 'HMDS' else 'lq'}
            models[kind] = build_model(opt)
        g = torch.Generator().manual_seed(0)
        gt = torch.rand(batch, 1, size, size, generator=g)
        noise = torch.randn(batch, 1, size, size, generator=g)
        data = {'gt': gt, 'lq': gt + 50 / 255 * noise, 'lq_teacher': gt + 25 / 255 * noise}
        times = {k: [] for k in models}
        for it in range(repeats + 1):
            for kind, model in models.items():
                model.feed_data(data)
                _sync(device)
                t0 = time.perf_counter()
                model.optimize_parameters(it + 1)
                _sync(device)
                if it:  # the first step is a warm-up
                    times[kind].append(time.perf_counter() - t0)
            log(f'  train step round {it + 1}/{repeats + 1} done')
    return {kind: (min(t), statistics.median(t)) for kind, t in times.items()}


def check_args(args, device):
    """Refuse, with one line (ValueError), every option that would fail or mislead later: before anything is
    measured, so that no long run ends in a traceback or cannot write its --out."""
    if device.type == 'cpu' and 'compile' in args.modes:
        raise ValueError('mode compile is for --device cuda (on the CPU inductor compiles each model for about a '
                         'minute and sped DnCNN and MDRN alike); on CPU use fp32, channels_last and amp.')
    if 'onnxruntime' in args.modes:
        if device.type == 'cuda':
            raise ValueError('mode onnxruntime runs onnxruntime on the CPU: use --device cpu for it.')
        from mdrn_models.tools.export import ExportError, onnx_modules
        try:
            onnx_modules()
        except ExportError as err:
            raise ValueError(f'mode onnxruntime: {err}.') from None
    if any(s < 16 or s % 8 for s in args.sizes):
        raise ValueError(f'--sizes must be multiples of 8 and >= 16, got {args.sizes}.')
    for flag in ('sizes', 'models', 'modes'):  # a repeat would only repeat rows (and columns) of the tables
        values = [label(m) for m in args.models] if flag == 'models' else getattr(args, flag)
        if (repeated := first_repeat(values)) is not None:
            raise ValueError(f'--{flag} lists {repeated} twice: give each once.')
    # train_size >= 8: MDRN pads its input to a multiple of 8 (3 levels), a smaller patch would time mostly padding
    for flag, minimum in (('repeats', 1), ('threads', 1), ('train_batch', 1), ('train_size', 8)):
        value = getattr(args, flag)
        if value is not None and value < minimum:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= {minimum}, got {value}.")
    for name in args.models:
        build(name)  # ValueError naming the choices
    if args.out:
        if os.path.isdir(args.out):
            raise ValueError(f"--out '{args.out}' is a folder: give a file name for the Markdown, e.g. "
                             f"{os.path.join(args.out, 'bench.md')}.")
        if os.path.exists(args.out) and not args.force:
            raise ValueError(f"'{args.out}' exists: pass --force to overwrite it or choose another --out.")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise ValueError(f"--out '{args.out}': folder '{folder}' does not exist; create it or choose another "
                             '--out.')


def main(argv=None):
    p = parsers.benchmark()
    args = p.parse_args(argv)
    try:
        device = pick_device(args.device)
        args.modes = args.modes or (['fp32', 'channels_last', 'amp'] if device.type == 'cuda' else
                                    ['fp32', 'channels_last'])
        check_args(args, device)
    except ValueError as err:
        p.exit(2, f'error: {err}\n')
    if 'amp' in args.modes and amp_note(device.type):
        print(amp_note(device.type), file=sys.stderr)
    args.malloc = 'glibc keeps freed memory' if args.keep_freed_memory and malloc_tuning.keep_freed_memory() else \
        'default malloc'
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = {s: args.repeats or (20 if device.type == 'cuda' else 3 if s <= 256 else 2 if s <= 512 else 1)
               for s in args.sizes}  # (check_args: --repeats >= 1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    def write(text):
        if args.out:
            with open(args.out, 'w') as fout:
                fout.write(text)

    rows = [] if args.train_only else bench_inference(args.models, args.modes, args.sizes, repeats, device, log,
                                                      on_rows=lambda rows: write(report(rows, None, device, args)))
    breakdown = bench_breakdown(args.models, args.sizes, device, log) if args.breakdown and not args.train_only \
        else None
    train = bench_train(device, args.train_batch, args.train_size, args.repeats or 3, log) \
        if (args.train or args.train_only) else None
    text = report(rows, train, device, args, breakdown)
    print(text)
    write(text)
    return 0
