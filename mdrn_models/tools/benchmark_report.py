"""The table ``basicsr benchmark`` prints and writes (``report``): inference latency, MACs and peak memory per model,
mode and size; GMAC/s relative to DnCNN; ``--breakdown``'s time per conv kind; ``--train``'s step times."""
import os

import torch

from mdrn_cli import parsers
from mdrn_models.tools.model_loading import amp_dtype_name


def label(name):
    """The table name of a ``--models`` entry: ``NAME`` of ``NAME=PATH``."""
    return name.split('=', 1)[0]


def device_desc(device):
    """The device a measurement ran on, for the reports of benchmark, compare and gpu-session."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}'
    return f'CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}'


def report(rows, train, device, args, breakdown=None):
    lines = [f'Device: {device_desc(device)}, {args.malloc}.']
    if rows:  # --train-only has no inference table: its header would describe a measurement not made
        lines[0] += (' Batch 1, no_grad; built-in models gray with random weights, NAME=PATH ones with their own. '
                     'Latency: min over rounds (median in brackets); rounds interleave all models. GMAC/s = '
                     'flop-counter MACs / latency. Peak memory: '
                     + ('CUDA max_memory_allocated above the weights.' if device.type == 'cuda' else
                        'peak live tensors created by the forward (activations/outputs, not weights or oneDNN '
                        'scratch).')
                     + (f' amp: autocast to {amp_dtype_name(device.type)}.' if 'amp' in args.modes else '')
                     + (f' onnxruntime: the ONNX export (opset {parsers.ONNX_OPSET}) in onnxruntime '
                        f'{onnxruntime_version()} on the CPU, {torch.get_num_threads()} intra-op threads; its peak '
                        'memory is not tracked.' if 'onnxruntime' in args.modes else ''))
        lines += ['', '| model | params (M) | MAC/px (K) | mode | size | latency ms (median) | ms/MP | GMAC/s | '
                  'peak MiB |', '|---|---:|---:|---|---:|---:|---:|---:|---:|']
    for r in rows:
        px = r['size'] ** 2
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.3f} | {r['macs'] / px / 1e3:.0f} | {r['mode']} | "
                     f"{r['size']}² | {r['lat'] * 1e3:.0f} ({r['median'] * 1e3:.0f}, n={r['n']}) | "
                     f"{r['lat'] * 1e3 / (px / 1e6):.0f} | {r['macs'] / r['lat'] / 1e9:.1f} | "
                     + ('— |' if r['peak'] is None else f"{r['peak'] / 2**20:.0f} |"))
    names = [label(name) for name in args.models]
    if rows and 'DnCNN' not in names:
        lines += ['', 'No GMAC/s-relative-to-DnCNN table: add DnCNN to --models for it.']
    elif rows:
        lines += ['', 'GMAC/s relative to DnCNN (same mode and size):', '',
                  '| model | mode | ' + ' | '.join(f'{s}²' for s in args.sizes) + ' |',
                  '|---|---|' + '---:|' * len(args.sizes)]
        gm = {(r['model'], r['mode'], r['size']): r['macs'] / r['lat'] for r in rows}
        for name in names:
            for mode in args.modes:
                cells = []
                for s in args.sizes:
                    d = gm.get(('DnCNN', mode, s))
                    cells.append(f'{gm[name, mode, s] / d:.2f}×' if d and (name, mode, s) in gm else '—')
                lines.append(f'| {name} | {mode} | ' + ' | '.join(cells) + ' |')
    if breakdown:
        lines += ['', 'Where the time goes (one fp32 forward per model and size, after a warm-up; each op timed on its '
                  'own, convs grouped by kernel, channels, stride s/dilation d and fused post-op; GMAC/s = MACs / '
                  'time of the group):', '', '| model | size | op | calls | GMAC | ms | share | GMAC/s |',
                  '|---|---:|---|---:|---:|---:|---:|---:|']
        for (name, size), groups in breakdown.items():
            total = sum(g[1] for g in groups.values())
            for kind, (calls, sec, macs) in sorted(groups.items(), key=lambda kv: -kv[1][1]) + \
                    [('total', (sum(g[0] for g in groups.values()), total, sum(g[2] for g in groups.values())))]:
                rate = f'{macs / sec / 1e9:.1f}' if macs else '—'
                lines.append(f'| {name} | {size}² | {kind} | {calls} | {macs / 1e9:.2f} | {sec * 1e3:.1f} | '
                             f'{sec / total:.0%} | {rate} |')
    if train:
        lines += ['', f'Training step (MDRN-2B student, batch {args.train_batch}×1×{args.train_size}², L1 + KD on '
                  'MSAG-2/3/4, Adam; built with basicsr build_model; min over rounds, median in brackets; rounds '
                  'interleave the three):', '',
                  '| method | teacher | step ms (median) | vs plain |', '|---|---|---:|---:|']
        teacher = {'plain': '—', 'HADS': 'MDRN (8 blocks), same input', 'HMDS': 'MDRN-2B, lq_teacher (σ 25)'}
        for kind, (t, med) in train.items():
            lines.append(f"| {kind} | {teacher[kind]} | {t * 1e3:.0f} ({med * 1e3:.0f}) | "
                         f"{t / train['plain'][0]:.2f}× |")
    return '\n'.join(lines) + '\n'


def onnxruntime_version():
    import onnxruntime
    return onnxruntime.__version__
