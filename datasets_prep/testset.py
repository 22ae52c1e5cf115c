"""A folder of clean test images (Set12, BSD68, CBSD68, Kodak24, Urban100, McMaster, ...) -> a ready val/test set.

    python -m datasets_prep.testset --input ~/Downloads/Urban100 --out datasets/test/Urban100
    python -m datasets_prep.testset --input ../shared/datasets/test/Set12 --out datasets/test/Set12 --noisy 15 25 50

The clean set is written as lossless PNG with BasicSR-safe names (dots/spaces -> ``_``), optionally converted to gray
(``--channels 1``, OpenCV's BGR->gray, as the dataset reads gray) or color (``--channels 3``), plus a
``meta_info.txt`` listing it. It is what ``AWGNDenoisingDataset`` reads as ``dataroot_gt`` for validation/testing.

``--noisy SIGMA ...`` also writes fixed noisy copies ``<out>_noisy/sigma<SIGMA>/<name>.png`` for other tools
(MATLAB, other repositories). They are the exact noisy inputs ``AWGNDenoisingDataset`` gives in val/test phase with
the same ``--noise-seed`` and ``--channels`` (noise of image k = function of (seed, k)), but clipped to [0, 255] and
rounded to 8 bits, as any PNG must be; BasicSR validation itself uses the unclipped float input.
"""
import argparse
import os.path as osp

import cv2
from tqdm import tqdm

from datasets_prep.common import (PrepError, begin_output, check_apart, check_decodable_sizes, claim_outputs,
                                  finish_output, image_shape, list_images, run_main, unique_keys, write_meta_info)


def convert_folder(inp, out, channels=None):
    """Write ``inp``'s images as PNG into the new folder ``out``. Returns the written names (sorted)."""
    names = list_images(inp)
    keys = unique_keys(names, inp)
    begin_output(out)
    shapes, renamed = [], []
    for name, key in tqdm(list(zip(names, keys)), unit='image', desc=f'Write {osp.basename(out)}'):
        img = cv2.imread(osp.join(inp, name), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise PrepError(f"'{osp.join(inp, name)}' is not a decodable image: remove or replace it, then rerun "
                            'with --force')
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if channels == 1 and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 3 and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if osp.splitext(name)[0] != key:
            renamed.append(f'{name} -> {key}.png')
        cv2.imwrite(osp.join(out, f'{key}.png'), img)
        shapes.append((f'{key}.png', image_shape(img)))
    write_meta_info(out, shapes)
    if renamed:
        print(f'renamed {len(renamed)} images for BasicSR keys, e.g. {renamed[0]}')
    finish_output(out)
    return [n for n, _ in shapes]


def write_noisy(clean_folder, noisy_folder, sigma, channels, noise_seed):
    """Noisy PNG copies exactly as AWGNDenoisingDataset (val phase) makes them, clipped and rounded to uint8."""
    import mdrn_models  # noqa: F401  (registers the dataset; imports the basicsr compat alias first)
    from basicsr.utils import tensor2img
    from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset
    ds = AWGNDenoisingDataset({'phase': 'test', 'dataroot_gt': clean_folder, 'sigma': sigma, 'channels': channels,
                               'noise_seed': noise_seed, 'io_backend': {'type': 'disk'}})
    begin_output(noisy_folder)
    for k in tqdm(range(len(ds)), unit='image', desc=f'Noisy sigma={sigma:g}'):
        item = ds[k]
        img = tensor2img(item['lq'], rgb2bgr=True, min_max=(0, 1))
        cv2.imwrite(osp.join(noisy_folder, osp.basename(item['gt_path'])), img)
    finish_output(noisy_folder)
    return len(ds)


def sigma_tag(sigma):
    return f'sigma{sigma:g}'.replace('.', 'p')


def build_parser():
    p = argparse.ArgumentParser(prog='python -m datasets_prep.testset', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help='folder of clean images')
    p.add_argument('--out', required=True, help='output folder, e.g. datasets/test/Set12')
    p.add_argument('--channels', type=int, choices=(1, 3), default=None,
                   help='convert to 1 (gray) or 3 (color) channels; default: keep each image as it is')
    p.add_argument('--noisy', type=float, nargs='+', default=[], metavar='SIGMA',
                   help='also write fixed noisy PNG copies at these sigmas (1..255 pixel scale)')
    p.add_argument('--noise-seed', type=int, default=0, help='noise seed of the noisy copies (as noise_seed in YAML)')
    p.add_argument('--noisy-out', default=None, help='folder for the noisy copies (default: <out>_noisy)')
    p.add_argument('--force', action='store_true', help='replace existing outputs')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.noisy:
        # the dataset's own check ([1, 255], no nan/inf), here before the clean folder is written: failing in
        # write_noisy would leave that folder behind and the rerun would need --force
        from mdrn_models.data.awgn_dataset import parse_sigma
        for s in args.noisy:
            parse_sigma(s, '--noisy sigma', PrepError)
    if args.noise_seed < 0:
        raise PrepError('--noise-seed must be >= 0')
    inp, out = osp.normpath(args.input), osp.normpath(args.out)
    check_decodable_sizes(inp, list_images(inp))
    noisy_root = args.noisy_out or f'{out}_noisy'
    noisy_dirs = [osp.join(noisy_root, sigma_tag(s)) for s in args.noisy]
    repeated = sorted({osp.basename(d) for d in noisy_dirs if noisy_dirs.count(d) > 1})
    if repeated:
        raise PrepError(f"--noisy lists a sigma twice ({', '.join(repeated)}): give each sigma once")
    check_apart(inp, [out] + noisy_dirs)
    claim_outputs([out] + noisy_dirs, args.force)
    names = convert_folder(inp, out, args.channels)
    print(f'wrote {len(names)} clean images + meta_info.txt to {out}')
    if args.noisy:
        channels = args.channels
        if channels is None:  # the dataset needs one channel count: infer from the written images
            gray = all(cv2.imread(osp.join(out, n), cv2.IMREAD_UNCHANGED).ndim == 2 for n in names)
            channels = 1 if gray else 3
        for s, d in zip(args.noisy, noisy_dirs):
            n = write_noisy(out, d, s, channels, args.noise_seed)
            print(f'wrote {n} noisy images (sigma={s:g}, channels={channels}, noise_seed={args.noise_seed}) to {d}')
    return 0


if __name__ == '__main__':
    run_main(main)
