"""A small demo set from scikit-image's bundled images (no download), so the demo runs on a fresh machine.

    python -m datasets_prep.demo --out datasets/demo

writes
  ``datasets/demo/train/``  6 color photographs (astronaut, coffee, rocket, chelsea, immunohistochemistry,
                            hubble_deep_field), at most ``--train-max-side`` pixels a side;
  ``datasets/demo/val/``    2 photographs (camera, motorcycle_left), at most ``--val-max-side`` pixels a side;
  and a ``meta_info.txt`` in each. Gray option files read the same PNGs with ``channels: 1`` (OpenCV gray
  conversion), color ones with ``channels: 3`` (camera is gray, so it is read as three equal channels).
Only images shipped inside the scikit-image wheel are used (no pooch/network fetch).
"""
import argparse
import os
import os.path as osp

import cv2
import numpy as np
from tqdm import tqdm

from datasets_prep.common import (PrepError, begin_output, claim_outputs, finish_output, image_shape, run_main,
                                  write_meta_info)

TRAIN = ('astronaut', 'coffee', 'rocket', 'chelsea', 'immunohistochemistry', 'hubble_deep_field')
VAL = ('camera', 'motorcycle_left')


def load(name):
    """An image bundled with scikit-image as uint8 HxW or HxWx3 RGB; PrepError when it is not available offline."""
    import skimage.data as skd
    from skimage import io
    data_dir = osp.dirname(skd.__file__)
    files = {'motorcycle_left': 'motorcycle_left.png', 'immunohistochemistry': 'ihc.png'}
    try:
        if name in files:
            img = io.imread(osp.join(data_dir, files[name]))
        else:
            img = getattr(skd, name)()
    except Exception as err:  # e.g. a scikit-image build that no longer bundles the file (would need network)
        raise PrepError(f"scikit-image image '{name}' is not available offline ({type(err).__name__}: {err}): "
                        'install scikit-image>=0.19 from a wheel') from err
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    return img.astype(np.uint8)


def shrink(img, max_side):
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def write_split(names, folder, max_side):
    os.makedirs(folder)
    shapes = []
    for name in tqdm(names, unit='image', desc=f'Write {osp.basename(folder)}'):
        img = shrink(load(name), max_side)
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.imwrite(osp.join(folder, f'{name}.png'), img)
        shapes.append((f'{name}.png', image_shape(img)))
    write_meta_info(folder, shapes)


def build_parser():
    p = argparse.ArgumentParser(prog='python -m datasets_prep.demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='datasets/demo', help='output folder (default datasets/demo)')
    p.add_argument('--train-max-side', type=int, default=512, help='longest side of train images (default 512)')
    p.add_argument('--val-max-side', type=int, default=256, help='longest side of val images (default 256)')
    p.add_argument('--force', action='store_true', help='replace an existing output folder')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.train_max_side < 64 or args.val_max_side < 16:
        raise PrepError('--train-max-side must be >= 64 (the demo crops 64px patches) and --val-max-side >= 16')
    claim_outputs([args.out], args.force)
    begin_output(args.out)
    write_split(TRAIN, osp.join(args.out, 'train'), args.train_max_side)
    write_split(VAL, osp.join(args.out, 'val'), args.val_max_side)
    finish_output(args.out)
    print(f'wrote {len(TRAIN)} train and {len(VAL)} val images to {args.out}')
    return 0


if __name__ == '__main__':
    run_main(main)
