"""Helpers shared by the ``datasets_prep`` commands (one copy, not one per command)."""
import os
import os.path as osp
import shutil
import sys

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)
from mdrn_models.data.awgn_dataset import IMG_EXTENSIONS  # the images the dataset lists from a folder
from mdrn_models.utils.messages import first_repeat


class PrepError(Exception):
    """A user-facing problem: printed as one line, exit code 2, before any work is done."""


def run_main(main, argv=None):
    """Run ``main(argv)``; turn PrepError into a one-line message and exit code 2."""
    try:
        code = main(argv)
    except PrepError as err:
        print(f'error: {err}', file=sys.stderr)
        code = 2
    sys.exit(code or 0)


def list_images(folder):
    """Sorted image file names (no directories) directly inside ``folder``; PrepError when none/absent."""
    if not osp.isdir(folder):
        raise PrepError(f"input folder '{folder}' does not exist: check the path")
    names = sorted(n for n in os.listdir(folder)
                   if osp.isfile(osp.join(folder, n)) and osp.splitext(n)[1].lower() in IMG_EXTENSIONS)
    if not names:
        raise PrepError(f"no images ({', '.join(IMG_EXTENSIONS)}) in '{folder}': check the path")
    return names


def stem_key(name):
    """Image name -> LMDB/output key. BasicSR keys are ``name.split('.')[0]``, so extra dots would collide/truncate:
    they are replaced by underscores here (and reported by the callers)."""
    stem = osp.splitext(name)[0]
    return stem.replace('.', '_').replace(' ', '_')


def check_unique(keys, folder):
    repeated = first_repeat(keys)
    if repeated is not None:
        raise PrepError(f"two images in '{folder}' map to the same key '{repeated}': rename one of them")


def check_apart(input_folder, outputs):
    """Refuse an output that is, contains or lies inside the input folder: ``--force`` removes outputs, and the input
    is never modified (nor are outputs listed as inputs)."""
    inp = osp.realpath(input_folder)
    for out in outputs:
        real = osp.realpath(out)
        if osp.commonpath([inp, real]) in (inp, real):
            raise PrepError(f"output '{out}' overlaps the input folder '{input_folder}' (is, contains or lies inside "
                            'it): choose an output path outside the input')


def prepare_output(path, force):
    """Refuse an existing output unless ``force`` (then it is removed). Never touches anything else."""
    if osp.lexists(path):
        if not force:
            raise PrepError(f"output '{path}' already exists: pass --force to replace it, or choose another path")
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def lmdb_map_size(paths):
    """An upper bound of the LMDB size for PNG-encoded copies of ``paths`` (header-only reads via Pillow).

    BasicSR's default estimates from the first image only, which is too small for sets of different sizes."""
    from PIL import Image
    total = 0
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
            c = len(im.getbands())
        total += w * h * c * 2  # 2x: 16-bit PNGs and PNG worst-case overhead
    return total + (64 << 20)


def make_lmdb(folder, names, lmdb_path, force, compress_level=1):
    """Folder of images -> LMDB + meta_info.txt with BasicSR's ``make_lmdb_from_imgs`` (keys = stem of each name).

    The existence check happens here first: BasicSR's helper calls ``sys.exit(1)`` when the output exists."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    if not lmdb_path.endswith('.lmdb'):
        raise PrepError(f"LMDB path '{lmdb_path}' must end with .lmdb (BasicSR convention): rename it")
    keys = [stem_key(n) for n in names]
    bad = [n for n, k in zip(names, keys) if osp.splitext(n)[0] != k]
    if bad:
        raise PrepError(f"image names with dots or spaces ({bad[0]!r}, ...) break BasicSR's LMDB keys: "
                        'rename them (datasets_prep.testset writes safe names)')
    check_unique(keys, folder)
    prepare_output(lmdb_path, force)
    make_lmdb_from_imgs(folder, lmdb_path, names, keys, compress_level=compress_level,
                        map_size=lmdb_map_size([osp.join(folder, n) for n in names]))
    return keys
