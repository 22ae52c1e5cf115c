"""The tables ``compare`` writes: ``compare.md`` (with ``--baseline`` also the paired differences), ``compare.csv`` and
``per_image.csv`` (docs/comparing.md)."""
import csv
import math
import os.path as osp

from mdrn_models.tools.compare_stats import CONFIDENCE, interval_text, verdict
from mdrn_models.tools.model_loading import RANDOM_INIT

PER_IMAGE_FIELDS = ('set', 'sigma', 'noise_seed', 'image', 'model', 'psnr', 'ssim')


def row_weights(meta, sigma, vals):
    """CSV ``weights`` of one (model, sigma) row: the weights that produced it ('' where the model did not run)."""
    if not meta:
        return 'noisy input'
    weights = meta['weights']
    return (weights.get(sigma) or weights.get(None) or '') if vals else ''


def random_init_mark(meta):
    """' (random init)' after a model's name in the table when its scores come from untrained weights."""
    rand = [s for s, w in (meta or {}).get('weights', {}).items() if w == RANDOM_INIT]
    if not rand:
        return ''
    if len(rand) == len(meta['weights']):
        return f' ({RANDOM_INIT})'
    return f" ({RANDOM_INIT} at σ={', '.join(f'{s:g}' for s in rand)})"


def write_csv(path, rows):
    with open(path, 'w', newline='') as fout:
        writer = csv.DictWriter(fout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ('' if v is None else (f'{v:.6g}' if isinstance(v, float) else v)) for k, v in r.items()}
                         for r in rows)


def markdown(header, rows, info, figures, flops_size):
    """compare.md from the CSV's ``rows``: one table row per model, one column per (set, sigma); then the weights
    behind each model and the figures."""
    names = list(dict.fromkeys(r['model'] for r in rows))
    cols = list(dict.fromkeys((r['set'], r['sigma']) for r in rows))
    by_key = {(r['model'], r['set'], r['sigma']): r for r in rows}
    lines = [header, '', '| model | ' + ' | '.join(f'{s} σ={g}' for s, g in cols)
             + f' | params (M) | GFLOPs@{flops_size}² | ms/MP |', '|---|' + '---|' * len(cols) + '---:|---:|---:|']
    for name in names:
        cells = [('—' if r['psnr'] is None else f"{r['psnr']:.2f}{_spread(r['psnr_draw_std'], 2)} / "
                  f"{r['ssim']:.4f}{_spread(r['ssim_draw_std'], 4)}")
                 for r in (by_key[(name, *col)] for col in cols)]
        r = by_key[(name, *cols[0])]  # size and speed are per model: the same in each of its rows
        tail = '— | — | —' if r['params_M'] is None else \
            f"{r['params_M']:.3f} | {r[f'gflops_{flops_size}']:.2f} | {r['ms_per_MP']:.0f}"
        lines.append(f'| {name}{random_init_mark(info.get(name))} | ' + ' | '.join(cells) + f' | {tail} |')
    lines += ['', 'Weights: ' + '; '.join(f"{n}: " + ', '.join(w if s is None else f'@{s:g}: {w}'
                                                              for s, w in info[n]['weights'].items())
                                          for n in info), '']
    lines += [f'![{osp.basename(f)}](figures/{osp.basename(f)})' for f in figures]
    return '\n'.join(lines)


def paired_markdown(rows, baseline):
    """The table of paired differences to ``baseline``: per model and column, ΔPSNR [CI] and ΔSSIM [CI], on how
    many images the model scores higher, and the verdict."""
    cols = list(dict.fromkeys((r['set'], r['sigma']) for r in rows))
    pct = f'{CONFIDENCE:.0%}'
    lines = [f'Paired difference to {baseline} on the same images and noise: mean Δ over images [{pct} bootstrap CI, '
             'BCa, scipy.stats.bootstrap], images with a higher PSNR, and whether the interval excludes 0.', '',
             '| model | ' + ' | '.join(f'{s} σ={g}: ΔPSNR (dB) / ΔSSIM' for s, g in cols) + ' |',
             '|---|' + '---|' * len(cols)]
    by_key = {(r['model'], r['set'], r['sigma']): r for r in rows}
    for name in dict.fromkeys(r['model'] for r in rows):
        if name in (baseline, 'noisy'):
            continue
        cells = []
        for col in cols:
            r = by_key[(name, *col)]
            if r.get('d_psnr') is None:
                cells.append('—')
                continue
            psnr, ssim = (interval_text(r[k], r[f'{k}_low'], r[f'{k}_high'], d, ' (no CI)')
                          for k, d in (('d_psnr', 2), ('d_ssim', 4)))
            cells.append(f"{psnr} / {ssim}; {r['improved']} better; "
                         f"{verdict({'low': r['d_psnr_low'], 'high': r['d_psnr_high']})}")
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _spread(std, digits):
    return '' if std is None or math.isnan(std) else f' ± {std:.{digits}f}'


def write_per_image_csv(path, scores):
    """``per_image.csv``: one line per (set, sigma, noise draw, image, model)."""
    with open(path, 'w', newline='') as fout:
        writer = csv.writer(fout)
        writer.writerow(PER_IMAGE_FIELDS)
        writer.writerows(scores)
