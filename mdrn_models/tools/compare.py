"""``basicsr compare``: denoisers side by side on identical noisy inputs, scored as ``basicsr test`` scores them (each
model built by ``model_loading.build_model``, run by ``eval_forward``). One Markdown + CSV table, per-image scores and
zoomed-crop figures; flags, method and outputs: docs/comparing.md."""
import os
import os.path as osp
import re
import sys
import time
from collections import OrderedDict

import numpy as np
import torch

import mdrn_models  # noqa: F401  (compat alias + registers MDRN/DnCNN/FFDNet/AWGNDenoisingDataset)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img

from mdrn_arch.arch_util import in_channels
from mdrn_cli import parsers
from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset, parse_sigma
from mdrn_models.integration.option_files import OptionFileError
from mdrn_models.models.denoise_model import eval_forward
from mdrn_models.tools import malloc_tuning
from mdrn_models.tools.compare_figures import figure_name, pick_crop, save_figure
from mdrn_models.tools.compare_stats import draw_spread, paired_difference
from mdrn_models.tools.benchmark_probes import sync
from mdrn_models.tools.benchmark_report import device_desc
from mdrn_models.tools.compare_tables import markdown, paired_markdown, row_weights, write_csv, write_per_image_csv
from mdrn_models.models.training_step import inference_autocast
from mdrn_models.tools.model_loading import (ModelLoadError, amp_dtype_name, amp_note,
                                             build_model, count_flops, pick_device, set_sigma)
from mdrn_models.utils.checkpoints import CheckpointError
from mdrn_models.utils.messages import first_line, first_repeat

OUR_FIGURE = re.compile(r'.+_sigma[0-9.]+_.+\.png')  # the names figure_name() gives: what --force may delete
OUTPUT_FILES = ('compare.md', 'compare.csv', 'per_image.csv')


class CompareError(ValueError):
    """Bad command-line input, reported as one line before any compute."""


def arch_problem(a, b):
    """Why two (net, opt) pairs are not one architecture (one line), or None. ``sigma`` aside: FFDNet's is set to each
    tested sigma anyway; a bare checkpoint has no options, so its weights' shapes decide."""
    (net_a, opt_a), (net_b, opt_b) = a, b
    params_a, params_b = (sum(p.numel() for p in n.parameters()) for n in (net_a, net_b))
    shapes_a, shapes_b = ([(k, tuple(v.shape)) for k, v in n.state_dict().items()] for n in (net_a, net_b))
    if type(net_a) is not type(net_b) or shapes_a != shapes_b:
        return f'{type(net_a).__name__} with {params_a / 1e6:.3f}M params vs {type(net_b).__name__} with ' \
               f'{params_b / 1e6:.3f}M params'
    net_opt_a, net_opt_b = ({k: v for k, v in (o.get('network_g') or {}).items() if k != 'sigma'}
                            for o in (opt_a, opt_b))
    if net_opt_a and net_opt_b and net_opt_a != net_opt_b:
        diff = sorted(k for k in net_opt_a.keys() | net_opt_b.keys() if net_opt_a.get(k) != net_opt_b.get(k))
        return 'network_g options ' + ', '.join(f'{k}={net_opt_a.get(k)} vs {net_opt_b.get(k)}' for k in diff)
    return None


# ------------------------------------------------------------------------------------------------------------- args
def parse_models(entries):
    """``NAME[@SIGMA]=PATH`` list -> OrderedDict name -> {sigma or None: path}."""
    models = OrderedDict()
    for entry in entries:
        if '=' not in entry:
            raise CompareError(f"--models entry '{entry}' must be NAME=PATH or NAME@SIGMA=PATH "
                               '(e.g. DnCNN@25=options/test_dncnn_gray_sigma25.yml).')
        name, path = entry.split('=', 1)
        sigma = None
        if '@' in name:
            name, sig = name.rsplit('@', 1)
            try:
                sigma = float(sig)
            except ValueError:
                raise CompareError(f"--models entry '{entry}': '@{sig}' is not a number (NAME@25=PATH).") from None
        if not name or name == 'noisy':
            raise CompareError(f"--models entry '{entry}': give a model name other than 'noisy' before '='.")
        slots = models.setdefault(name, {})
        if sigma in slots or (None in slots) or (sigma is None and slots):
            raise CompareError(f"--models: '{name}' is given twice for the same sigma; use one entry per sigma.")
        slots[sigma] = path
    return models


def parse_sets(entries):
    sets = OrderedDict()
    for entry in entries:
        if '=' in entry:
            name, path = entry.split('=', 1)
        else:
            name, path = osp.basename(osp.normpath(entry)), entry
        if not osp.isdir(path):
            raise CompareError(f"--sets: '{path}' is not a folder of clean images (NAME=FOLDER, e.g. "
                               'Set12=../shared/datasets/test/Set12).')
        if name in sets:
            raise CompareError(f"--sets: the name '{name}' is used twice; name them NAME=FOLDER.")
        sets[name] = path
    return sets


def check_args(args):
    """Every problem with the command line, as one line, before any model is built or file read or written; also
    the figures an earlier run left in --out (--force deletes them)."""
    models = parse_models(args.models)
    sets = parse_sets(args.sets)
    sigmas = [parse_sigma(s, '--sigmas', CompareError)[0] for s in args.sigmas]
    if (repeated := first_repeat(sigmas)) is not None:
        raise CompareError(f'--sigmas lists {repeated:g} twice: give each noise level once.')
    if args.noise_seed is not None and args.noise_seeds is not None:
        raise CompareError('give --noise-seed or --noise-seeds, not both.')
    seeds = args.noise_seeds or [0 if args.noise_seed is None else args.noise_seed]
    if (bad := next((s for s in seeds if s < 0), None)) is not None:
        raise CompareError(f'--noise-seed must be a non-negative integer, got {bad}.')
    if (repeated := first_repeat(seeds)) is not None:
        raise CompareError(f'--noise-seeds lists {repeated} twice: give each seed once.')
    if args.baseline is not None and args.baseline not in models:
        raise CompareError(f"--baseline '{args.baseline}' is not a --models name ({', '.join(models)}).")
    if args.baseline is not None and len(models) < 2:
        raise CompareError('--baseline needs at least one other model in --models to compare with it.')
    for name, slots in models.items():
        for sigma in slots:
            if sigma is not None and sigma not in sigmas:
                raise CompareError(f"--models: '{name}@{sigma:g}' is for a sigma not in --sigmas {args.sigmas}.")
    if osp.exists(args.out) and not osp.isdir(args.out):
        raise CompareError(f"--out '{args.out}' is a file, not a folder: choose a folder for compare.md, compare.csv "
                           'and figures/.')
    fig_dir = osp.join(args.out, 'figures')
    old_figures = sorted(osp.join(fig_dir, f) for f in (os.listdir(fig_dir) if osp.isdir(fig_dir) else ())
                         if OUR_FIGURE.fullmatch(f) and osp.isfile(osp.join(fig_dir, f)))
    existing = [p for p in (osp.join(args.out, f) for f in OUTPUT_FILES) if osp.exists(p)]
    if existing and not args.force:
        raise CompareError(f"'{existing[0]}' exists: pass --force to overwrite it or choose another --out.")
    if old_figures and not args.force:
        raise CompareError(f"'{fig_dir}' holds {len(old_figures)} figure(s) of an earlier run (e.g. "
                           f"{osp.basename(old_figures[0])}): pass --force to delete them or choose another --out.")
    note = args.amp and amp_note(torch.device(args.device).type)
    if note:
        print(note, file=sys.stderr)
    return models, sets, sigmas, seeds, old_figures


def run(args):
    from tqdm import tqdm

    models, sets, sigmas, seeds, old_figures = check_args(args)
    out_md, out_csv, out_images = (osp.join(args.out, f) for f in OUTPUT_FILES)
    fig_dir = osp.join(args.out, 'figures')
    device = torch.device(args.device)

    # build every network first: bad paths / mismatched channels fail before any compute
    nets = OrderedDict()  # (name, sigma) -> (net, its test-time forward)
    info = OrderedDict()  # name -> dict(params, gflops, weights: {sigma or None: weights}, time, mp)
    first = {}  # name -> (sigma, path, (net, opt)) of its first entry
    channels = args.channels
    for name, slots in models.items():
        for sigma, path in slots.items():
            net, weights, opt = build_model(path)
            c = in_channels(net)
            if channels is None:
                channels = c
            if c is not None and c != channels:
                raise CompareError(f"model '{name}' ({path}) takes {c}-channel input but the comparison uses "
                                   f'{channels} channels: compare gray with gray, color with color (--channels).')
            sigma0, path0, net_opt0 = first.setdefault(name, (sigma, path, (net, opt)))
            problem = arch_problem(net_opt0, (net, opt))
            if problem:
                raise CompareError(f"--models: '{name}@{sigma0:g}' ({path0}) and '{name}@{sigma:g}' ({path}) are "
                                   f'different architectures ({problem}) but share one table row (one params / '
                                   f'GFLOPs / ms/MP): give them different names, e.g. {name}-A@{sigma0:g} and '
                                   f'{name}-B@{sigma:g}.')
            nets[name, sigma] = net.to(device), eval_forward(net, opt)
            entry = info.setdefault(name, {'params': None, 'gflops': None, 'weights': {}, 'time': 0.0, 'mp': 0.0})
            entry['weights'][sigma] = weights
    channels = channels or 1

    datasets = {}  # (set, sigma, noise seed) -> dataset
    for set_name, folder in sets.items():
        for sigma in sigmas:
            for seed in seeds:
                try:
                    datasets[set_name, sigma, seed] = AWGNDenoisingDataset({
                        'dataroot_gt': folder, 'channels': channels, 'sigma': sigma, 'noise_seed': seed,
                        'phase': 'test', 'io_backend': {'type': 'disk'},
                        **({} if args.max_megapixels is None else {'max_pixels': args.max_megapixels * 1e6})})
                except ValueError as err:
                    raise CompareError(f'--sets {set_name}: {err}') from None
    n_imgs = {key: len(ds) if args.max_images is None else min(len(ds), args.max_images)
              for key, ds in datasets.items()}
    # read every image once before any output or compute: an undecodable file (or a --crop outside an image) is
    # one line naming it now, not a traceback after minutes of denoising. Decoding is cheap next to the models.
    for set_name in sets:
        ds = datasets[set_name, sigmas[0], seeds[0]]
        for k in range(n_imgs[set_name, sigmas[0], seeds[0]]):
            try:
                gt = ds[k]['gt']
            except ValueError as err:
                raise CompareError(f'--sets {set_name}: {err}') from None
            y, x, size = args.crop or (0, 0, 1)
            if k < args.figures_per_set and not (0 <= y < gt.shape[-2] and 0 <= x < gt.shape[-1] and size > 0):
                raise CompareError(f'--crop {" ".join(map(str, args.crop))} lies outside image {ds.paths[k]} '
                                   f'({gt.shape[-2]}x{gt.shape[-1]}): pick Y, X inside every figure image.')
    for name in info:
        net, forward = next(pair for (m, _), pair in nets.items() if m == name)
        info[name]['params'] = sum(p.numel() for p in net.parameters())
        try:  # the first forward of each model: one that cannot run on this input fails here, before any output
            info[name]['gflops'] = count_flops(forward, channels, args.flops_size, device) / 1e9
        except Exception as err:  # noqa: BLE001  (whatever the arch raises, the user gets one line)
            raise CompareError(f"model '{name}' ({models[name][next(iter(models[name]))]}) fails on a "
                               f'{channels}-channel {args.flops_size}×{args.flops_size} image: {first_line(err)}') \
                from None

    try:
        os.makedirs(fig_dir, exist_ok=True)
    except OSError as err:
        raise CompareError(f"--out '{args.out}': cannot create {fig_dir} ({err.strerror}): choose another --out.") \
            from None
    for path in old_figures:  # --force: a previous run's figures go, so none is left stale beside the new ones
        os.remove(path)
    scores = {}  # (model, set, sigma) -> {noise seed: [(psnr, ssim) per image]}
    per_image = []  # the rows of per_image.csv
    figures = []
    with torch.no_grad(), tqdm(total=sum(n_imgs.values()), unit='img', desc='compare', dynamic_ncols=True) as bar:
        for (set_name, sigma, seed), ds in datasets.items():
            runnable = [(name, pair) for name in models if (pair := nets.get((name, sigma)) or nets.get((name, None)))]
            for k in range(n_imgs[set_name, sigma, seed]):
                data = ds[k]
                lq = data['lq'][None].to(device)
                gt_img = tensor2img(data['gt'][None])
                # tensor2img clamps its argument in place (basicsr 1.4.2): give it a copy so that lq stays unclipped
                outs = [('noisy', tensor2img(data['lq'][None].clone()))]
                for name, (net, forward) in runnable:
                    set_sigma(net, sigma)
                    bar.set_postfix_str(f'{set_name} σ{sigma:g} {name}')
                    sync(device)
                    t0 = time.perf_counter()
                    with inference_autocast(device.type, args.amp):
                        out = forward(lq).float()
                    sync(device)
                    info[name]['time'] += time.perf_counter() - t0
                    info[name]['mp'] += lq.shape[-1] * lq.shape[-2] / 1e6
                    outs.append((name, tensor2img(out.cpu())))
                row = []
                for name, img in outs:
                    psnr = calculate_psnr(img, gt_img, crop_border=0, test_y_channel=False)
                    ssim = calculate_ssim(img, gt_img, crop_border=0, test_y_channel=False)
                    scores.setdefault((name, set_name, sigma), {}).setdefault(seed, []).append((psnr, ssim))
                    per_image.append((set_name, f'{sigma:g}', seed, osp.basename(data['gt_path']), name,
                                      f'{psnr:.6g}', f'{ssim:.6g}'))
                    row.append((name, psnr, img))
                if k < args.figures_per_set and seed == seeds[0]:
                    crop = tuple(args.crop) if args.crop else pick_crop(gt_img, args.crop_size)
                    crop = (crop[0], crop[1], min(crop[2], gt_img.shape[0] - crop[0], gt_img.shape[1] - crop[1]))
                    stem = osp.splitext(osp.basename(data['gt_path']))[0]
                    fig = osp.join(fig_dir, figure_name(set_name, sigma, stem))
                    # two names made alike by figure_name ('a/b' and 'a_b', or a.png and a.jpg) keep both figures
                    base, i = fig[:-4], 0
                    while fig in figures:
                        i += 1
                        fig = f'{base}_{i}.png'
                    if not save_figure(fig, row + [('clean', None, gt_img)], crop, args.zoom):
                        raise CompareError(f"could not write figure '{fig}': check that --out is a writable folder.")
                    figures.append(fig)
                bar.update(1)

    rows = table_rows(['noisy', *models], sets, sigmas, scores, info, args.flops_size, args.baseline)
    write_csv(out_csv, rows)
    write_per_image_csv(out_images, per_image)
    draws = f'noise_seed {seeds[0]}' if len(seeds) == 1 else f"noise seeds {', '.join(map(str, seeds))}: mean over " \
        'draws, ± the standard deviation of the set mean across them'
    header = (f'PSNR (dB) / SSIM on identical noisy inputs (AWGN, {draws}, not clipped; '
              f'{channels}-channel' + (f'; first {args.max_images} images per set' if args.max_images else '') + '). '
              f'GFLOPs: what the row runs on one {args.flops_size}×{args.flops_size} image (torch.utils.flop_counter; '
              f'a ×8 self-ensemble counts 8 forwards). ms/MP: time per megapixel on {device_desc(device)}, '
              'measured during this run'
              + (f'; autocast to {amp_dtype_name(device.type)} (--amp)' if args.amp else '') + '.')
    text = markdown(header, rows, info, figures, args.flops_size)
    if args.baseline:
        text = text.replace('\n\nWeights: ', '\n\n' + paired_markdown(rows, args.baseline) + '\n\nWeights: ', 1)
    with open(out_md, 'w') as fout:
        fout.write(text + '\n')
    return rows, out_md, out_csv, figures


def table_rows(names, sets, sigmas, scores, info, flops_size, baseline=None):
    """compare.csv's rows: per model, set and sigma the mean scores over images and noise draws, their spread across
    draws, and with a ``baseline`` the paired differences to it (``compare_stats``)."""
    # each image's scores averaged over the noise draws ([image, metric]), once per model, set and sigma
    image_means = {key: np.mean(list(draws.values()), axis=0) for key, draws in scores.items()}
    rows = []
    for name in names:
        for set_name in sets:
            for sigma in sigmas:
                draws = scores.get((name, set_name, sigma))
                per_image = image_means.get((name, set_name, sigma))  # None where the model did not run
                meta = info.get(name, {})
                ms_mp = 1e3 * meta['time'] / meta['mp'] if meta.get('mp') else None
                draw_means = [np.mean(draw, axis=0) for draw in draws.values()] if draws else None  # [draw][metric]
                spread = [draw_spread([d[m] for d in draw_means]) if draws else None for m in (0, 1)]
                row = {'model': name, 'set': set_name, 'sigma': f'{sigma:g}',
                       'images': len(per_image) if draws else 0, 'noise_draws': len(draws) if draws else 0,
                       'psnr': float(per_image[:, 0].mean()) if draws else None,
                       'ssim': float(per_image[:, 1].mean()) if draws else None,
                       'psnr_draw_std': spread[0], 'ssim_draw_std': spread[1],
                       'params_M': meta['params'] / 1e6 if meta else None,
                       f'gflops_{flops_size}': meta.get('gflops'),
                       'ms_per_MP': ms_mp,
                       'weights': row_weights(meta, sigma, draws)}
                base = image_means.get((baseline, set_name, sigma))
                if baseline is not None:
                    paired = base is not None and draws and name not in (baseline, 'noisy')
                    row.update(paired_columns(base, per_image) if paired else dict.fromkeys(PAIRED_COLUMNS))
                rows.append(row)
    return rows


PAIRED_COLUMNS = ('d_psnr', 'd_psnr_low', 'd_psnr_high', 'd_ssim', 'd_ssim_low', 'd_ssim_high', 'improved')


def paired_columns(base, other):
    """The paired differences of ``other`` to ``base``: per-image scores ``[image, (psnr, ssim)]`` of the same images,
    each already averaged over the noise draws."""
    psnr, ssim = (paired_difference(base[:, m], other[:, m]) for m in (0, 1))
    return {'d_psnr': psnr['delta'], 'd_psnr_low': psnr['low'], 'd_psnr_high': psnr['high'],
            'd_ssim': ssim['delta'], 'd_ssim_low': ssim['low'], 'd_ssim_high': ssim['high'],
            'improved': f"{psnr['improved']}/{psnr['n']}"}


def main(argv=None):
    parser = parsers.compare()
    args = parser.parse_args(argv)
    malloc_tuning.keep_freed_memory()
    if args.max_images is not None and args.max_images < 1:
        parser.exit(2, '--max-images must be >= 1.\n')
    if args.zoom < 1 or args.crop_size < 4 or args.flops_size < 8:
        parser.exit(2, 'error: --zoom must be >= 1, --crop-size >= 4, --flops-size >= 8.\n')
    try:
        args.device = str(pick_device(args.device, CompareError))
        rows, out_md, _, figures = run(args)
    except (CompareError, ModelLoadError, OptionFileError, CheckpointError) as err:
        parser.exit(2, f'error: {err}\n')
    with open(out_md) as fin:
        print(fin.read())
    print(f'wrote {out_md}, {osp.splitext(out_md)[0]}.csv and {len(figures)} figure(s) in {args.out}/figures')
    return 0
