"""Check an LMDB made by BasicSR's lmdb utilities: key count, keys vs meta_info, every value decodable (and its
shape matching meta_info). Prints a report; exit code 0 when everything is fine, 1 on any problem.

    python -m datasets_prep.verify datasets/DIV2K/DIV2K_train_HR_sub.lmdb
"""
import argparse
import os.path as osp

import cv2
import numpy as np
from tqdm import tqdm

from datasets_prep.common import PrepError, image_shape, run_main
from mdrn_models.data.awgn_dataset import read_meta_info


def verify_lmdb(lmdb_path, meta_info=None):
    """Returns (problems: list[str], stats: dict). Raises PrepError when the path is not an LMDB at all."""
    import lmdb
    if not osp.isfile(osp.join(lmdb_path, 'data.mdb')):
        raise PrepError(f"'{lmdb_path}' is not an LMDB folder (no data.mdb): check the path or build it with "
                        'python -m datasets_prep.div2k')
    meta_path = meta_info or osp.join(lmdb_path, 'meta_info.txt')
    problems = []
    meta = read_meta_info(meta_path) if osp.isfile(meta_path) else None
    if meta is None:
        problems.append(f'meta_info {meta_path} is missing (BasicSR reads the key list from it)')
    env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False, meminit=False)
    n_entries = env.stat()['entries']
    in_lmdb, undecodable, shape_mismatch = set(), [], []
    with env.begin(write=False) as txn:
        for key, value in tqdm(txn.cursor(), total=n_entries, unit='img', desc='Decode'):
            key = key.decode('ascii', errors='replace')
            in_lmdb.add(key)
            img = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None:
                undecodable.append(key)
                continue
            if meta and meta.get(key):
                h, w, c = image_shape(img)
                if (h, w, c) != meta[key]:
                    shape_mismatch.append(f'{key} {h}x{w}x{c} != meta {meta[key]}')
    env.close()
    stats = {'entries': n_entries, 'meta_info': len(meta) if meta is not None else None}
    if undecodable:
        problems.append(f'{len(undecodable)} values are not decodable images (first: {undecodable[0]})')
    if shape_mismatch:
        problems.append(f'{len(shape_mismatch)} shapes differ from meta_info (first: {shape_mismatch[0]})')
    if meta is not None:
        missing = sorted(set(meta) - in_lmdb)
        extra = sorted(in_lmdb - set(meta))
        if missing:
            problems.append(f'{len(missing)} meta_info keys are not in the LMDB (first: {missing[0]})')
        if extra:
            problems.append(f'{len(extra)} LMDB keys are not in meta_info (first: {extra[0]})')
    if n_entries == 0:
        problems.append('the LMDB is empty')
    return problems, stats


def build_parser():
    p = argparse.ArgumentParser(prog='python -m datasets_prep.verify', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('lmdb', help='path of the .lmdb folder')
    p.add_argument('--meta-info', default=None, help='meta_info file to compare with (default: <lmdb>/meta_info.txt)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.meta_info and not osp.isfile(args.meta_info):
        raise PrepError(f"--meta-info '{args.meta_info}' does not exist: fix the path or leave it out")
    problems, stats = verify_lmdb(args.lmdb, args.meta_info)
    print(f'{args.lmdb}: {stats["entries"]} entries, meta_info: '
          f'{stats["meta_info"] if stats["meta_info"] is not None else "missing"} keys')
    if problems:
        for p in problems:
            print(f'PROBLEM: {p}')
        print(f'FAILED: {len(problems)} problem(s)')
        return 1
    print('OK: every key is in meta_info and every value decodes')
    return 0


if __name__ == '__main__':
    run_main(main)
