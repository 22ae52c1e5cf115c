"""``basicsr compare-seeds``: pool the paired comparisons of ``basicsr compare`` runs, one per training seed, into a
per-seed and over-seeds difference with its verdict; ``--update`` regenerates the marked tables of a markdown file
(docs/comparing.md, "Is a difference between training recipes real?")."""
import csv
import math
import os.path as osp
import re
import shlex
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

from mdrn_cli import parsers
from mdrn_models.tools.compare_stats import CONFIDENCE, interval_text, paired_difference

MARKER = re.compile(r'(<!-- compare-seeds (.*?) -->\n)(.*?)(<!-- /compare-seeds -->)', re.S)


class SeedsError(ValueError):
    """A folder or name that cannot be pooled; the message says which and the fix."""


def read_scores(folder):
    """``{(set, sigma): {model: {image: (psnr, ssim)}}}`` from ``folder/per_image.csv``, each image's scores averaged
    over its noise draws."""
    path = osp.join(folder, 'per_image.csv')
    if not osp.isfile(path):
        raise SeedsError(f"{folder}: no per_image.csv: pass the --out folder of a 'basicsr compare' run")
    draws = defaultdict(list)
    with open(path, newline='') as f:
        try:
            for r in csv.DictReader(f):
                draws[(r['set'], r['sigma']), r['model'], r['image']].append((float(r['psnr']), float(r['ssim'])))
        except (KeyError, TypeError, ValueError) as exc:  # another CSV, or a row cut short
            raise SeedsError(f"{path} is not a 'basicsr compare' per_image.csv (set, sigma, noise_seed, image, model, "
                             f'psnr, ssim): {type(exc).__name__} {exc}; rerun the compare') from None
    scores = defaultdict(lambda: defaultdict(dict))
    for (column, model, image), values in draws.items():
        scores[column][model][image] = tuple(np.mean(values, axis=0))
    return scores


def seed_interval(deltas):
    """(mean, low, high) over seeds: the Student-t interval of the mean; NaN bounds for one seed."""
    mean = float(np.mean(deltas))
    if len(deltas) < 2:
        return mean, math.nan, math.nan
    if np.ptp(deltas) == 0:
        return mean, mean, mean
    low, high = stats.ttest_1samp(deltas, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(low), float(high)


def verdict(low, high):
    if math.isnan(low):
        return 'one seed: a hint'
    return 'helps' if low > 0 else 'hurts' if high < 0 else 'not shown'


def pool(runs, baseline, model, column):
    """Per seed and over seeds: ``model - baseline`` on ``column`` (set, sigma) of every run in ``runs``
    (``[(seed label, read_scores(...))]``)."""
    per_seed = []
    for seed, scores in runs:
        models = scores.get(column, {})
        for name in (baseline, model):
            if name not in models:
                raise SeedsError(f"{seed}: no model '{name}' on {column[0]} σ={column[1]} (it has "
                                 f"{', '.join(sorted(models)) or 'nothing there'})")
        images = sorted(models[baseline])
        if sorted(models[model]) != images:
            raise SeedsError(f"{seed}: '{model}' and '{baseline}' were scored on different images of {column[0]}")
        base, other = (np.array([models[name][i] for i in images]) for name in (baseline, model))
        per_seed.append({'seed': seed, **{metric: paired_difference(base[:, k], other[:, k])
                                          for k, metric in enumerate(('psnr', 'ssim'))}})
    pooled = {metric: seed_interval([s[metric]['delta'] for s in per_seed]) for metric in ('psnr', 'ssim')}
    return per_seed, pooled


def table(folders, baseline, models=None, sets=None, brief=False):
    """The markdown table: one row per model and (set, sigma); ``brief``: the pooled ΔPSNR and the verdict only."""
    runs = [(osp.basename(osp.normpath(folder)), read_scores(folder)) for folder in folders]
    columns = [c for c in runs[0][1] if sets is None or c[0] in sets]
    if not columns:
        has = 'none of the sets ' + ', '.join(sets) if sets else 'no scores'
        raise SeedsError(f'{folders[0]}: its per_image.csv has {has}')
    if models is None:
        models = [m for m in runs[0][1][columns[0]] if m not in (baseline, 'noisy')]
    pct = f'{CONFIDENCE:.0%}'
    lines = ([f'| model | set | seeds | ΔPSNR (dB), mean over seeds [{pct} CI over seeds] | verdict |',
              '| --- | --- | ---: | --- | --- |'] if brief else
             [f'| model | set | seeds | ΔPSNR (dB), mean over seeds [{pct} CI over seeds] | ΔPSNR per seed '
              f'[{pct} CI over images] | ΔSSIM, mean over seeds [{pct} CI over seeds] | verdict |',
              '| --- | --- | ---: | --- | --- | --- | --- |'])
    for model in models:
        for column in columns:
            per_seed, pooled = pool(runs, baseline, model, column)
            seeds = '; '.join(f"{s['seed']}: {interval_text(*(s['psnr'][k] for k in ('delta', 'low', 'high')), 2)}"
                              for s in per_seed)
            middle = '' if brief else f' {seeds} | {interval_text(*pooled["ssim"], 4)} |'
            lines.append(f'| {model} | {column[0]} σ={column[1]} | {len(runs)} | {interval_text(*pooled["psnr"], 2)} |'
                         f'{middle} {verdict(*pooled["psnr"][1:])} |')
    return '\n'.join(lines) + '\n'


def table_of(args):
    if not args.folders or not args.baseline:
        raise SeedsError('give the compare folder of each seed and --baseline NAME (or --update FILE ...)')
    return table(args.folders, args.baseline, args.models, args.sets, args.brief)


def marked_table(marker_args):
    args = parsers.compare_seeds().parse_args(shlex.split(marker_args))
    if args.update:
        raise SeedsError(f'--update in a compare-seeds marker: {marker_args}')
    return table_of(args)


def update(path):
    """Regenerate every marked table of ``path`` (a SeedsError when it has none); True when the file changed."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if not MARKER.search(text):
        raise SeedsError(f'{path}: no <!-- compare-seeds ARGS --> ... <!-- /compare-seeds --> table')
    new = MARKER.sub(lambda m: m.group(1) + marked_table(m.group(2)) + m.group(4), text)
    if new != text:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(new)
    return new != text


def main(argv=None):
    args = parsers.compare_seeds().parse_args(argv)
    try:
        if args.update:
            for path in args.update:
                print(f"{path}: {'updated' if update(path) else 'up to date'}")
            return 0
        print(table_of(args), end='')
    except SeedsError as err:
        sys.exit(f'basicsr compare-seeds: error: {err}')
    return 0
