"""DIV2K (or any folder of large clean images) -> overlapping sub-images -> LMDB + meta_info, with BasicSR's tools.

    python -m datasets_prep.div2k --input datasets/DIV2K/DIV2K_train_HR --out datasets/DIV2K

writes ``datasets/DIV2K/DIV2K_train_HR_sub/`` (PNG sub-images ``0001_s001.png`` ...) and
``datasets/DIV2K/DIV2K_train_HR_sub.lmdb`` (``data.mdb`` + ``meta_info.txt``, made by
``basicsr.utils.lmdb_util.make_lmdb_from_imgs``). Defaults follow BasicSR's ``extract_subimages.py`` for DIV2K HR:
480x480 crops every 240 pixels, a last crop flush with the border when more than ``--thresh-size`` pixels remain,
PNG compression 3. For the 800 DIV2K training images this gives 32,592 sub-images (BasicSR's
``meta_info_DIV2K800sub_GT.txt``). Images smaller than the crop size are kept whole along that side.

DIV2K is not downloaded by this command: get ``DIV2K_train_HR.zip`` from https://data.vision.ee.ethz.ch/cvl/DIV2K/
and unzip it under ``datasets/DIV2K/``.
"""
import argparse
import itertools
import os
import os.path as osp
from contextlib import nullcontext
from multiprocessing import Pool

import cv2
import numpy as np
from tqdm import tqdm

from datasets_prep.common import (PrepError, begin_output, check_apart, check_decodable_sizes, claim_outputs,
                                  finish_output, list_images, make_lmdb, run_main, unique_keys)


def crop_starts(size, crop_size, step, thresh_size):
    """Top/left corners along one side, as BasicSR's extract_subimages (plus: sides below crop_size -> [0])."""
    if size <= crop_size:
        return [0]
    starts = list(range(0, size - crop_size + 1, step))
    if size - (starts[-1] + crop_size) > thresh_size:
        starts.append(size - crop_size)
    return starts


def _crop_one(args):
    path, key, out_folder, crop_size, step, thresh_size, compress_level = args
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        return key, None
    rows, cols = (crop_starts(side, crop_size, step, thresh_size) for side in img.shape[:2])
    names = []
    for idx, (x, y) in enumerate(itertools.product(rows, cols), 1):
        name = f'{key}_s{idx:03d}.png'
        patch = np.ascontiguousarray(img[x:x + crop_size, y:y + crop_size, ...])
        cv2.imwrite(osp.join(out_folder, name), patch, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
        names.append(name)
    return key, names


def extract_subimages(input_folder, out_folder, crop_size=480, step=240, thresh_size=0, n_thread=2,
                      compress_level=3):
    """Crop every image of ``input_folder`` into ``out_folder`` (which must not exist). Returns sorted names."""
    names = list_images(input_folder)
    keys = unique_keys(names, input_folder)
    begin_output(out_folder)
    jobs = [(osp.join(input_folder, n), k, out_folder, crop_size, step, thresh_size, compress_level)
            for n, k in zip(names, keys)]
    with Pool(n_thread) if n_thread > 1 else nullcontext() as pool:
        crops = pool.imap_unordered(_crop_one, jobs) if pool else map(_crop_one, jobs)
        results = list(tqdm(crops, total=len(jobs), unit='image', desc='Extract sub-images'))
    unreadable = [key for key, sub in results if sub is None]
    if unreadable:
        raise PrepError(f'{len(unreadable)} images could not be decoded (first: {unreadable[0]}): remove or '
                        f"replace them in '{input_folder}', then rerun with --force")
    finish_output(out_folder)
    return sorted(name for _, sub in results for name in sub)


def build_parser():
    p = argparse.ArgumentParser(prog='python -m datasets_prep.div2k', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help='folder of clean HR images, e.g. datasets/DIV2K/DIV2K_train_HR')
    p.add_argument('--out', default=None, help='output folder (default: the parent of --input)')
    p.add_argument('--name', default=None, help='output name stem (default: <input folder name>_sub)')
    p.add_argument('--crop-size', type=int, default=480, help='sub-image size (default 480)')
    p.add_argument('--step', type=int, default=240, help='stride between sub-images (default 240)')
    p.add_argument('--thresh-size', type=int, default=0,
                   help='add a border-flush crop when more than this many pixels remain (default 0)')
    p.add_argument('--n-thread', type=int, default=min(4, os.cpu_count() or 1), help='worker processes')
    p.add_argument('--compress-level', type=int, default=3, help='PNG compression of the sub-images (0-9)')
    p.add_argument('--no-lmdb', action='store_true', help='only write the sub-image folder')
    p.add_argument('--force', action='store_true', help='replace existing outputs')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.crop_size <= 0 or args.step <= 0 or args.thresh_size < 0 or args.n_thread < 1:
        raise PrepError('--crop-size, --step and --n-thread must be positive and --thresh-size >= 0')
    if not 0 <= args.compress_level <= 9:  # cv2.imwrite only warns (per sub-image) and falls back to 9
        raise PrepError(f'--compress-level is a PNG compression level from 0 (none, fastest) to 9 (smallest), '
                        f'got {args.compress_level}')
    inp = osp.normpath(args.input)
    names = list_images(inp)  # fails early on a missing/empty input
    check_decodable_sizes(inp, names)
    out = args.out or osp.dirname(osp.abspath(inp))
    stem = args.name or f'{osp.basename(inp)}_sub'
    sub_folder = osp.join(out, stem)
    lmdb_path = osp.join(out, f'{stem}.lmdb')
    outputs = [sub_folder] + ([] if args.no_lmdb else [lmdb_path])
    check_apart(inp, outputs)
    claim_outputs(outputs, args.force)
    os.makedirs(out, exist_ok=True)
    print(f'{len(names)} images in {inp} -> {args.crop_size}px crops, step {args.step} -> {sub_folder}')
    subs = extract_subimages(inp, sub_folder, args.crop_size, args.step, args.thresh_size, args.n_thread,
                             args.compress_level)
    print(f'wrote {len(subs)} sub-images to {sub_folder}')
    if not args.no_lmdb:
        make_lmdb(sub_folder, subs, lmdb_path, args.force)
        print(f'wrote {len(subs)} entries to {lmdb_path} (check it: python -m datasets_prep.verify {lmdb_path})')
    return 0


if __name__ == '__main__':
    run_main(main)
