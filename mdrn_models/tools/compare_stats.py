"""Paired statistics for ``compare --baseline``: the per-image difference of a model to the baseline, its mean with a
bootstrap interval over images, and the verdict (docs/comparing.md, "Is a difference real?")."""
import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
# fewer images give no interval (a hint): a bootstrap of 2-9 values has too few distinct means to cover 95%
MIN_IMAGES = 10


def paired_difference(baseline, other):
    """Per-image scores of the baseline and of another model (same images, in the same order) ->
    ``{'delta', 'low', 'high', 'improved', 'n'}``: the mean of ``other - baseline``, its CI bounds (NaN for fewer than
    ``MIN_IMAGES`` images), and on how many images ``other`` scores higher."""
    diffs = np.asarray(other, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if diffs.ndim != 1 or len(diffs) == 0:
        raise ValueError('paired_difference needs one score per image for both models')
    mean = float(diffs.mean())
    if len(diffs) < MIN_IMAGES:
        low = high = math.nan
    elif np.ptp(diffs) == 0:
        low = high = mean  # every resample has this mean (scipy's BCa is undefined on constant data)
    else:
        result = stats.bootstrap((diffs,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                 method='BCa', rng=np.random.default_rng(0))
        low, high = (float(v) for v in result.confidence_interval)
    return {'delta': mean, 'low': low, 'high': high, 'improved': int((diffs > 0).sum()), 'n': len(diffs)}


def verdict(diff):
    if math.isnan(diff['low']):
        return f'too few images for an interval (fewer than {MIN_IMAGES}): a hint'
    return 'better' if diff['low'] > 0 else 'worse' if diff['high'] < 0 else 'no difference shown'


def interval_text(mean, low, high, digits, missing=''):
    """``+0.12 [+0.05, +0.19]``; ``missing`` in place of the interval where there is none (NaN bounds)."""
    interval = missing if math.isnan(low) else f' [{low:+.{digits}f}, {high:+.{digits}f}]'
    return f'{mean:+.{digits}f}{interval}'


def draw_spread(per_draw_means):
    """Standard deviation (ddof 1) of a model's set mean across noise draws; NaN for one draw."""
    values = np.asarray(per_draw_means, dtype=np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan
