"""Helpers shared by the ``datasets_prep`` commands (one copy, not one per command)."""
import json
import os
import os.path as osp
import shutil
import sys
import time

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)
from mdrn_cli.signals import run_stoppable
from mdrn_models.utils import images
from mdrn_models.utils.images import too_large
from mdrn_models.utils.messages import first_repeat


class PrepError(Exception):
    """A user-facing problem: printed as one line, exit code 2, before any work is done."""


def run_main(main, argv=None):
    """Run ``main(argv)``; a PrepError, what the machine refuses (an OSError: a full disk, no permission) and Ctrl-C
    or SIGTERM end in one line (exit code 2, 2, 130/143). Outputs left unfinished stay marked incomplete."""
    def run():
        try:
            return main(argv)
        except PrepError as err:
            print(f'error: {err}', file=sys.stderr)
        except OSError as err:
            print(f"error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}: fix the path or free "
                  'space, then rerun (--force replaces an output left incomplete)', file=sys.stderr)
        return 2
    sys.exit(run_stoppable(run, lambda name: f'stopped by {name}: outputs it was writing are marked incomplete; rerun '
                                             'with --force') or 0)


def list_images(folder):
    """Sorted image file names directly inside ``folder``; PrepError when none/absent."""
    return images.list_images(folder, PrepError)


def check_decodable_sizes(folder, names):
    """Refuse an image these tools would decode whole that declares more than ``MAX_PIXELS`` (from its header)."""
    for name in names:
        problem = too_large(osp.join(folder, name), raise_it='crop or downscale it first')
        if problem:
            raise PrepError(problem)


def stem_key(name):
    """Image name -> LMDB/output key. BasicSR keys are ``name.split('.')[0]``, so extra dots would collide/truncate:
    they are replaced by underscores here (and reported by the callers)."""
    return osp.splitext(name)[0].replace('.', '_').replace(' ', '_')


def unique_keys(names, folder):
    """``stem_key`` of each of ``folder``'s image ``names``; PrepError when two are the same."""
    keys = [stem_key(n) for n in names]
    repeated = first_repeat(keys)
    if repeated is not None:
        raise PrepError(f"two images in '{folder}' map to the same key '{repeated}': rename one of them")
    return keys


def image_shape(img):
    """``(h, w, c)`` of a decoded image, as meta_info lists it."""
    return (*img.shape[:2], 1 if img.ndim == 2 else img.shape[2])


def write_meta_info(folder, shapes):
    """``folder``/meta_info.txt: a ``name (h,w,c)`` line per ``(name, (h, w, c))`` of ``shapes``."""
    with open(osp.join(folder, 'meta_info.txt'), 'w') as f:
        f.writelines(f'{name} ({h},{w},{c})\n' for name, (h, w, c) in shapes)


def check_apart(input_folder, outputs):
    """Refuse an output that is, contains or lies inside the input folder: ``--force`` removes outputs, and the input
    is never modified (nor are outputs listed as inputs)."""
    inp = osp.realpath(input_folder)
    for out in outputs:
        real = osp.realpath(out)
        if osp.commonpath([inp, real]) in (inp, real):
            raise PrepError(f"output '{out}' overlaps the input folder '{input_folder}' (is, contains or lies inside "
                            'it): choose an output path outside the input')


MARKER = '.datasets_prep'  # in every output folder: made by these tools, and whether complete (BasicSR skips dot files)


def _marker(path):
    try:
        with open(osp.join(path, MARKER)) as f:
            mark = json.load(f)
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) else None


def claim_outputs(paths, force):
    """Make room for the outputs ``paths``, checking all of them before removing any. An existing output is
    replaced only with ``force``, and only if these tools made it (its marker) or it is an empty folder: a folder the
    user made is never removed, and one an earlier run left half-written is named as such."""
    problems = []  # (rank, message): a folder the user made first, then a half-written one, then one that exists
    for path in paths:
        if not osp.lexists(path):
            continue
        folder = osp.isdir(path) and not osp.islink(path)
        mark = _marker(path) if folder else None
        if mark is None and not (folder and not os.listdir(path)):
            problems.append((0, f"output '{path}' exists and was not made by datasets_prep (it holds no {MARKER} "
                                f"file): {'--force only replaces outputs these tools made; ' if force else ''}move it "
                                'away or choose another path'))
        elif force:
            continue
        elif mark is not None and not mark.get('complete'):
            problems.append((1, f"output '{path}' is incomplete: an earlier run (started {mark.get('started', '?')}) "
                                'stopped before finishing it; pass --force to rebuild it'))
        else:
            problems.append((2, f"output '{path}' already exists: pass --force to replace it, or choose another path"))
    if problems:
        raise PrepError(min(problems)[1])
    for path in paths:
        if osp.lexists(path):
            shutil.rmtree(path)


def begin_output(path):
    """Create the output folder ``path`` (which :func:`claim_outputs` cleared), marked incomplete."""
    try:
        os.makedirs(path)
    except FileExistsError:
        raise PrepError(f"output '{path}' appeared after this run checked it: is another run writing it? Wait for "
                        'it, or choose another path') from None
    _mark(path, complete=False)


def finish_output(path):
    """Mark the output folder ``path`` complete: a rerun needs --force to replace it."""
    _mark(path, complete=True)


def _mark(path, complete):
    with open(osp.join(path, MARKER), 'w') as f:
        json.dump({'tool': osp.basename(sys.argv[0]), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                   'complete': complete}, f)


def lmdb_map_size(paths):
    """An upper bound of the LMDB size for PNG-encoded copies of ``paths`` (header-only reads via Pillow); BasicSR's
    default estimates from the first image only, too small for sets of different sizes."""
    from PIL import Image
    total = 0
    for p in paths:
        with Image.open(p) as im:
            total += im.width * im.height * len(im.getbands()) * 2  # 2x: 16-bit PNGs and PNG worst-case overhead
    return total + (64 << 20)


def make_lmdb(folder, names, lmdb_path, force, compress_level=1):
    """Folder of images -> LMDB + meta_info.txt with BasicSR's ``make_lmdb_from_imgs`` (keys = stem of each name).
    The existence check happens here first: BasicSR's helper calls ``sys.exit(1)`` when the output exists."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    if not lmdb_path.endswith('.lmdb'):
        raise PrepError(f"LMDB path '{lmdb_path}' must end with .lmdb (BasicSR convention): rename it")
    bad = [n for n in names if osp.splitext(n)[0] != stem_key(n)]
    if bad:
        raise PrepError(f"image names with dots or spaces ({bad[0]!r}, ...) break BasicSR's LMDB keys: "
                        'rename them (datasets_prep.testset writes safe names)')
    keys = unique_keys(names, folder)
    claim_outputs([lmdb_path], force)
    begin_output(lmdb_path)
    # BasicSR's helper writes into a folder that must not exist: built inside the marked output, then moved up
    building = osp.join(lmdb_path, '.building.lmdb')
    make_lmdb_from_imgs(folder, building, names, keys, compress_level=compress_level,
                        map_size=lmdb_map_size([osp.join(folder, n) for n in names]))
    for name in os.listdir(building):
        os.replace(osp.join(building, name), osp.join(lmdb_path, name))
    os.rmdir(building)
    finish_output(lmdb_path)
    return keys
