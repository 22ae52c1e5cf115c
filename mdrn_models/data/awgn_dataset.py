"""``AWGNDenoisingDataset``: clean images through BasicSR's ``FileClient`` (disk, disk + ``meta_info``, LMDB) and
unclipped Gaussian noise added on the fly. Options and conventions: docs/training.md (The dataset)."""
import os.path as osp
import re
from numbers import Real

import numpy as np
import torch
from torch.utils import data as data

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)
from basicsr.data.data_util import paths_from_lmdb
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, get_root_logger, imfrombytes, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY

from mdrn_models.utils.messages import did_you_mean, first_repeat
from mdrn_models.utils.images import IMG_EXTENSIONS, MAX_PIXELS, pil_unbounded, too_large

# (first bytes, last bytes) of a whole PNG (its IEND chunk) and a whole JPEG (its EOI marker)
IMAGE_BOUNDS = ((b'\x89PNG\r\n\x1a\n', b'IEND\xaeB`\x82'), (b'\xff\xd8', b'\xff\xd9'))
PREP_HINT = ('make it as the option file\'s header says (python -m datasets_prep.demo / .div2k / .testset, or a link '
             'to ../shared), or fix the path')


MAX_UNREADABLE_IN_A_ROW = 10  # more than this many unreadable images in a row: the data is gone, not damaged


class UnreadableImage(ValueError):
    """One image of the set cannot be read or decoded now (the file or LMDB value was damaged or removed)."""


class TrainingDataUnreadable(RuntimeError):
    """Training cannot go on: image after image is unreadable (a folder unmounted or deleted mid-run)."""


def parse_sigma(sigma, key='sigma', error=ValueError):
    """``sigma`` option (or flag ``key``) -> (low, high) in 0..255 units (low == high for a fixed level); ``error``
    (one line) for a value that is not a noise level."""
    if isinstance(sigma, (list, tuple)):
        if len(sigma) != 2 or not all(isinstance(s, Real) and not isinstance(s, bool) for s in sigma):
            raise error(f'{key} must be a number or [low, high], got {sigma!r}.')
        low, high = float(sigma[0]), float(sigma[1])
        if low > high:
            raise error(f'{key} range [low, high] needs low <= high, got {sigma!r}.')
    elif isinstance(sigma, Real) and not isinstance(sigma, bool):
        low = high = float(sigma)
    else:
        raise error(f'{key} must be a number or [low, high] (0..255 scale), got {sigma!r}.')
    if not (0 < low <= 255 and 0 < high <= 255):
        raise error(f'{key} must lie in [1, 255] (pixel scale, e.g. 25), got {sigma!r}.')
    if low < 1:  # below one grey level: almost surely a level on the 0..1 scale (25/255 = 0.098)
        raise error(f'{key} {sigma!r} is below 1 on the 0..255 pixel scale: give it in grey levels, e.g. 25 '
                    f'for 0.098 on the 0..1 scale ({low:g} x 255 = {low * 255:g}).')
    return low, high


def _end_marker(data):
    """The last bytes of a whole image of the format ``data`` starts as (``IMAGE_BOUNDS``), or None."""
    return next((ends for starts, ends in IMAGE_BOUNDS if data[:len(starts)] == starts), None)


def eval_noise(shape, noise_seed, index):
    """Standard-normal float32 noise for evaluation image ``index``: a pure function of (noise_seed, index, shape)."""
    rng = np.random.default_rng([int(noise_seed), int(index)])
    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))


@DATASET_REGISTRY.register()
class AWGNDenoisingDataset(data.Dataset):
    """Clean images + additive white Gaussian noise; options and conventions: docs/training.md."""

    # every key this dataset reads, plus those BasicSR's options parser and data loader read from the same block
    OPTION_KEYS = frozenset({
        'dataroot_gt', 'meta_info', 'io_backend', 'channels', 'sigma', 'sigma_teacher', 'noise_seed', 'gt_size',
        'use_hflip', 'use_rot', 'max_pixels',
        'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio',
        'use_shuffle', 'pin_memory', 'persistent_workers', 'prefetch_mode', 'num_prefetch_queue'})

    def __init__(self, opt):
        super().__init__()
        unknown = sorted(set(opt) - self.OPTION_KEYS)
        if unknown:  # a typo (noise_sed) or another dataset's key (dataroot_lq) would be ignored silently
            hint = did_you_mean(unknown[0], self.OPTION_KEYS)
            if unknown[0] == 'dataroot_lq':
                hint = 'it adds the noise to dataroot_gt itself: remove dataroot_lq'
            raise ValueError(f"unknown option '{unknown[0]}' for AWGNDenoisingDataset ("
                             f"{hint or 'its options: ' + ', '.join(sorted(self.OPTION_KEYS))}).")
        self.opt = opt
        self.phase = opt.get('phase', 'train')
        self.is_train = self.phase == 'train'
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.backend = self.io_backend_opt.get('type', 'disk')
        self.file_client = None

        self.channels = opt.get('channels', 3)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (gray) or 3 (color), got {self.channels!r}.")
        if 'sigma' not in opt:
            raise ValueError('sigma is required: a noise level on the 0..255 scale (e.g. 25), or [low, high].')
        self.sigma_range = parse_sigma(opt['sigma'])
        if self.sigma_range[0] != self.sigma_range[1] and not self.is_train:
            raise ValueError(f'sigma range {opt["sigma"]!r} is for training only; val/test need one fixed sigma.')
        self.sigma_teacher = opt.get('sigma_teacher')
        if self.sigma_teacher is not None:
            st = parse_sigma(self.sigma_teacher, 'sigma_teacher')
            if st[0] != st[1]:
                raise ValueError(f'sigma_teacher must be one number, got {self.sigma_teacher!r}.')
            self.sigma_teacher = st[0]
            if self.sigma_teacher >= self.sigma_range[0]:
                raise ValueError(f'sigma_teacher ({self.sigma_teacher:g}) must be lower than sigma '
                                 f'({opt["sigma"]!r}): the teacher sees the lighter noise.')
        self.noise_seed = opt.get('noise_seed', 0)
        if not isinstance(self.noise_seed, int) or isinstance(self.noise_seed, bool) or self.noise_seed < 0:
            raise ValueError(f'noise_seed must be a non-negative integer, got {self.noise_seed!r}.')
        self.max_pixels = opt.get('max_pixels', MAX_PIXELS)
        if not isinstance(self.max_pixels, Real) or isinstance(self.max_pixels, bool) or not self.max_pixels > 0:
            raise ValueError(f'max_pixels (the most pixels one image may have) must be a positive number, got '
                             f'{self.max_pixels!r}.')
        if self.is_train:
            gt_size = opt.get('gt_size')
            if not isinstance(gt_size, int) or isinstance(gt_size, bool) or gt_size <= 0:
                raise ValueError(f'gt_size (training crop size) must be a positive integer, got {gt_size!r}.')
            self.gt_size = gt_size

        root = opt.get('dataroot_gt')
        if not root:
            raise ValueError(f'dataroot_gt is missing: set it to a folder or .lmdb of clean images ({PREP_HINT}).')
        self.gt_folder = str(root)
        if not osp.isdir(self.gt_folder):
            raise ValueError(f"dataroot_gt '{self.gt_folder}' does not exist: {PREP_HINT}.")
        meta_info = opt.get('meta_info')
        if meta_info is not None and not osp.isfile(meta_info):
            raise ValueError(f"meta_info '{meta_info}' does not exist: fix the path or remove the key.")

        if self.backend == 'lmdb':
            if not self.gt_folder.endswith('.lmdb') or not osp.isfile(osp.join(self.gt_folder, 'data.mdb')):
                raise ValueError(f"dataroot_gt '{self.gt_folder}' is not an LMDB (a '*.lmdb' folder with data.mdb "
                                 'and meta_info.txt): build it with python -m datasets_prep.div2k, or use '
                                 'io_backend: {type: disk}.')
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            if meta_info is not None:
                self.paths = list(read_meta_info(meta_info))
            else:
                if not osp.isfile(osp.join(self.gt_folder, 'meta_info.txt')):
                    raise ValueError(f"'{self.gt_folder}/meta_info.txt' is missing: rebuild the LMDB with "
                                     'python -m datasets_prep.div2k --force.')
                self.paths = paths_from_lmdb(self.gt_folder)
            self._check_lmdb_values()
        elif self.backend == 'disk':
            if meta_info is not None:
                self.paths = [osp.join(self.gt_folder, line.split(' ')[0]) for line in _read_lines(meta_info)]
            else:
                self.paths = sorted(osp.join(self.gt_folder, p) for p in scandir(self.gt_folder)
                                    if osp.splitext(p)[1].lower() in IMG_EXTENSIONS)
            missing = [p for p in self.paths if not osp.isfile(p)]
            # an LMDB read as a folder lists no image (or none of meta_info's names): name the backend, not the data
            lmdb_like = self.gt_folder.rstrip('/').endswith('.lmdb') or osp.isfile(osp.join(self.gt_folder, 'data.mdb'))
            if lmdb_like and (missing or not self.paths):
                raise ValueError(f"dataroot_gt '{self.gt_folder}' looks like an LMDB (a '*.lmdb' folder or one with "
                                 'data.mdb), not a folder of images: set io_backend: {type: lmdb}.')
            # checked here for every phase: a stale list would otherwise fail mid-run, at the first read of that file
            if missing:
                more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
                raise ValueError(f"'{missing[0]}'{more} is listed in meta_info '{meta_info}' but missing: add the file "
                                 'or remove its line (or regenerate the set and its meta_info with python -m '
                                 'datasets_prep.testset / datasets_prep.demo --force).')
        else:
            raise ValueError(f"io_backend type must be 'disk' or 'lmdb', got {self.backend!r}.")
        if not self.paths:
            raise ValueError(f"no images found in '{self.gt_folder}'"
                             f"{' (meta_info ' + meta_info + ')' if meta_info else ''}: {PREP_HINT}.")
        if not self.is_train:  # BasicSR saves each result (and names it in logs) by the image's name without extension
            stems = [osp.splitext(osp.basename(p))[0] for p in self.paths]
            repeated = first_repeat(stems)
            if repeated is not None:
                pair = [osp.basename(p) for p, stem in zip(self.paths, stems) if stem == repeated][:2]
                raise ValueError(f"'{pair[0]}' and '{pair[1]}' in '{self.gt_folder}' share the name '{repeated}', "
                                 'under which validation saves and reports each image: rename one.')
        if self.is_train:
            self._check_sizes(meta_info or osp.join(self.gt_folder, 'meta_info.txt'))
        elif self.backend == 'disk':
            # a validation set is small and read whole at every validation: check every file in full now, not hours
            # into training (LMDB sets: python -m datasets_prep.verify)
            self._disk_image_sizes(verify=True)

    def _check_lmdb_values(self):
        """Every key is in the LMDB and holds a whole PNG or JPEG, judged by its first and last bytes (a zero-copy
        read of two pages per value; other formats are decoded). ``datasets_prep.verify`` decodes them all."""
        import lmdb
        env = lmdb.open(self.gt_folder, readonly=True, lock=False, readahead=False, meminit=False)
        try:
            with env.begin(buffers=True) as txn:
                for key in self.paths:
                    value = txn.get(key.encode('ascii'))
                    if value is None:
                        raise ValueError(f"key '{key}' (meta_info) is not in LMDB '{self.gt_folder}': fix meta_info or "
                                         'rebuild the LMDB with python -m datasets_prep.div2k --force.')
                    kind = _end_marker(value)
                    whole = value[-len(kind):] == kind if kind else imfrombytes(bytes(value), float32=False) is not None
                    if not whole:
                        raise ValueError(f"'{key}' in LMDB '{self.gt_folder}' is not a whole image (damaged or "
                                         f'truncated): run python -m datasets_prep.verify {self.gt_folder}, then '
                                         'rebuild the LMDB.')
        finally:
            env.close()

    def _disk_image_sizes(self, verify=False):
        """``{path: (h, w)}`` from the image headers (PIL reads no pixels); ``verify`` also runs PIL's integrity check
        over each whole file (PNG chunk checksums: finds truncated files)."""
        sizes = {}
        for path in self.paths:
            problem = too_large(path, self.max_pixels, 'raise max_pixels (the dataset option; --max-megapixels of '
                                                       'basicsr compare) if this machine has the memory, or split '
                                                       'the image')
            if problem:
                raise ValueError(problem + '.')
            try:
                with pil_unbounded() as Image, Image.open(path) as img:  # bounded by max_pixels above
                    sizes[path] = img.size[::-1]
                    if verify:
                        img.verify()
            except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some corrupt chunks
                raise ValueError(f"'{path}' is not a readable image ({err}): replace or remove it.") from None
        return sizes

    def _check_sizes(self, lmdb_meta_info):
        """Refuse an image smaller than ``gt_size`` before training starts, from image headers (disk) or the shapes
        BasicSR's LMDB ``meta_info`` lists (``name.png (h,w,c) 1``)."""
        if self.backend == 'lmdb':
            sizes = {key: shape[:2] for key, shape in read_meta_info(lmdb_meta_info).items() if shape}
        else:
            sizes = self._disk_image_sizes()
        for path, (h, w) in sizes.items():
            if h * w > self.max_pixels:  # (disk images were checked from their headers already)
                raise ValueError(f"image '{path}' is {h}x{w} ({h * w / 1e6:.0f} MP), more than max_pixels "
                                 f'{self.max_pixels:g} of this dataset: raise max_pixels or split the image.')
            if h < self.gt_size or w < self.gt_size:
                raise ValueError(f"image '{path}' is {h}x{w}, smaller than gt_size {self.gt_size}: lower gt_size or "
                                 'remove the image.')

    def __len__(self):
        return len(self.paths)

    def _read_gt(self, index):
        """(path, HWC float32 image in [0, 1]); ``UnreadableImage`` when the file or value cannot be read whole."""
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend_opt.pop('type'), **self.io_backend_opt)
        path = self.paths[index]
        hint = (f'run python -m datasets_prep.verify {self.gt_folder}' if self.backend == 'lmdb' else
                'remove or replace that file')  # datasets_prep.verify reads LMDBs; on disk the path is the file
        try:
            img_bytes = self.file_client.get(path, 'gt')
        except OSError as err:  # a disk file gone since the set was built (an LMDB gives None for a missing key)
            raise UnreadableImage(f"cannot read '{path}' from {self.gt_folder}: {err}; check the path or {hint}") \
                from err
        if img_bytes is None:
            raise UnreadableImage(f"key '{path}' is not in LMDB '{self.gt_folder}': check meta_info or {hint}")
        kind = _end_marker(img_bytes)
        # OpenCV decodes a cut JPEG into grey rows without an error; some writers pad after the end marker
        if kind and kind not in img_bytes[-1024:]:
            raise UnreadableImage(f"'{path}' is cut short (no end marker in its last bytes): {hint}")
        # decoded as uint8 first: BasicSR's float32 conversion would fail on an undecodable value with an AttributeError
        img = imfrombytes(img_bytes, flag='grayscale' if self.channels == 1 else 'color', float32=False)
        if img is None:
            raise UnreadableImage(f"'{path}' is not a decodable image: {hint}")
        img = img.astype(np.float32) / 255.
        if img.ndim == 2:
            img = img[..., None]
        if self.is_train and (img.shape[0] < self.gt_size or img.shape[1] < self.gt_size):
            raise UnreadableImage(f"image '{path}' is {img.shape[0]}x{img.shape[1]}, smaller than gt_size "
                                  f'{self.gt_size}: lower gt_size or remove the image.')
        return path, img

    def _read_train_gt(self, index):
        """``_read_gt`` for training, where one damaged image must not end a run of days: skipped with a warning, the
        next readable one taken, the skip counted (``unreadable``; the ``basicsr`` command reports the sum)."""
        skipped = 0
        while True:
            try:
                return (*self._read_gt((index + skipped) % len(self.paths)), skipped)
            except UnreadableImage as err:
                skipped += 1
                get_root_logger().warning(f'skipped unreadable training image: {err}')
                if skipped > min(MAX_UNREADABLE_IN_A_ROW, len(self.paths) - 1):
                    raise TrainingDataUnreadable(
                        f'datasets.train: {skipped} images in a row are unreadable (the last: {err}): is '
                        f"{self.gt_folder} still there? Training stopped; resume with --auto_resume once it is") \
                        from None

    def __getitem__(self, index):
        if self.is_train:
            gt_path, img_gt, unreadable = self._read_train_gt(index)
            img_gt, _ = paired_random_crop(img_gt, img_gt, self.gt_size, 1, gt_path)
            img_gt = augment(img_gt, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        else:
            gt_path, img_gt = self._read_gt(index)
        img_gt = np.ascontiguousarray(img_gt)
        gt = img2tensor(img_gt, bgr2rgb=True, float32=True)

        if self.is_train:
            low, high = self.sigma_range
            sigma = low if low == high else low + (high - low) * torch.rand(()).item()
            noise = torch.randn(gt.shape)  # torch's global RNG, which BasicSR seeds in every worker
        else:
            sigma = self.sigma_range[0]
            noise = eval_noise(gt.shape, self.noise_seed, index)
        noise = noise * (sigma / 255.)
        out = {'lq': gt + noise, 'gt': gt, 'lq_path': gt_path, 'gt_path': gt_path, 'sigma': float(sigma)}
        if self.sigma_teacher is not None:
            out['lq_teacher'] = gt + noise * (self.sigma_teacher / sigma)
        if self.is_train:
            out['unreadable'] = unreadable
        return out


SHAPE = re.compile(r'\((\d+),\s*(\d+),\s*(\d+)\)')


def read_meta_info(path):
    """BasicSR's LMDB meta_info.txt (``name.png (h,w,c) compress``) -> ``{key: (h, w, c) or None}`` in file order;
    key = ``name.split('.')[0]``, as BasicSR's ``paths_from_lmdb``."""
    meta = {}
    for line in _read_lines(path):
        m = SHAPE.search(line)
        meta[line.split(' ')[0].split('.')[0]] = tuple(int(v) for v in m.groups()) if m else None
    return meta


def _read_lines(path):
    with open(path) as fin:
        return [line.strip() for line in fin if line.strip()]
