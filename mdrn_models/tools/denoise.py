"""``basicsr denoise``: the files around ``Denoiser`` (``mdrn_models.tools.denoiser``): paths checked before the model
is built, inputs decoded before anything is written, ``--add_noise``. Flags and behaviour: docs/cli.md.
"""
import os.path as osp
import sys

import cv2
import numpy as np
import torch

import mdrn_arch.basicsr_compat  # noqa: F401  (before the first basicsr import)
from basicsr.utils import img2tensor, tensor2img

from mdrn_cli import parsers
from mdrn_models.tools import malloc_tuning
from mdrn_models.data.awgn_dataset import parse_sigma
from mdrn_models.integration.option_files import OptionFileError
from mdrn_models.tools.denoiser import Denoiser, DenoiseError
from mdrn_models.tools.model_loading import ModelLoadError
from mdrn_models.utils.checkpoints import CheckpointError
from mdrn_models.utils.images import MAX_PIXELS, list_images, too_large, write_image


def noisy_path(dst):
    root, ext = osp.splitext(dst)
    return f'{root}_noisy{ext}'


def plan(inp, out, force, add_noise=False):
    """(input path, output path) pairs; every problem with the paths is raised here, before any model is built."""
    # a trailing separator names a folder, even one not created yet (imwrite creates it)
    folder_like = osp.isdir(out) or out.endswith(tuple(s for s in (osp.sep, osp.altsep) if s))
    if osp.isdir(inp):
        names = list_images(inp, DenoiseError)
        if osp.isfile(out) or (not folder_like and cv2.haveImageWriter(out)):
            raise DenoiseError(f'-i is a folder, so -o must be a folder, but {out} '
                               f'{"is a file" if osp.isfile(out) else "names an image file"}: give a folder, e.g. '
                               f'{osp.splitext(out)[0]}/')
        pairs = [(osp.join(inp, n), osp.join(out, osp.splitext(n)[0] + '.png')) for n in names]
    elif osp.isfile(inp):
        if folder_like:
            out = osp.join(out, osp.splitext(osp.basename(inp))[0] + '.png')
        if not cv2.haveImageWriter(out):
            raise DenoiseError(f'cannot write {out}: use an image extension such as .png, or end -o with / for a '
                               'folder')
        pairs = [(inp, out)]
    else:
        raise DenoiseError(f'input not found: {inp} (pass an image file or a folder of images to -i)')
    # two inputs must not write one file (IMG.png and IMG.jpg; with --add_noise also x.png's noisy copy x_noisy.png
    # and the input x_noisy.png's result): the second would silently replace the first, even without --force
    source_of = {}
    for src, dst in pairs:
        for o in ([dst, noisy_path(dst)] if add_noise else [dst]):
            if o in source_of:
                raise DenoiseError(f'{source_of[o]} and {src} would both be written to {o}: rename one of them')
            source_of[o] = src
    outputs = list(source_of)
    # checked before the --force check: an input is never overwritten, even with --force (as datasets_prep's
    # check_apart); samefile also catches a symlink or hard link to the input
    inputs = {osp.realpath(src): src for src, _ in pairs}
    for o in outputs:
        src = inputs.get(osp.realpath(o))
        if src is None and osp.exists(o):
            src = next((s for s in inputs.values() if osp.samefile(s, o)), None)
        if src is not None:
            raise DenoiseError(f'output {o} is the input {src} itself: choose another -o (inputs are never '
                               'overwritten, even with --force)')
    existing = [o for o in outputs if osp.exists(o)]
    if existing and not force:
        raise DenoiseError(f'{existing[0]} exists ({len(existing)} output(s) in all); pass --force to overwrite, '
                           'or choose another -o')
    return pairs


def read_image(path, channels, max_pixels=MAX_PIXELS,
               raise_it='pass --max-megapixels N if this machine has the memory, or split the image'):
    """uint8 HxWxC image in the model's channel order (gray, or RGB), as BasicSR's datasets feed it; an image larger
    than ``max_pixels`` is refused from its header, before it is decoded (``raise_it``: how to raise the bound)."""
    problem = too_large(path, max_pixels, raise_it)
    if problem:
        raise DenoiseError(f'{problem} (nothing was written)')
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise DenoiseError(f'cannot read {path} as an image: remove or fix it, then rerun (nothing was written)')
    return img[..., None] if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def add_noise(img, sigma, seed=0):
    """uint8 image -> float [1, C, H, W] in 0..1 plus AWGN of ``sigma`` drawn with ``seed`` (not clipped, as in
    training), and the noisy input as a uint8 image."""
    x = img2tensor(img.astype(np.float32) / 255., bgr2rgb=False, float32=True)[None]
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255.
    return x, tensor2img(x.clamp(0, 1), rgb2bgr=False)


def main(argv=None):
    args = parsers.denoise().parse_args(argv)
    malloc_tuning.keep_freed_memory()
    try:
        # the dataset's own range check ([1, 255]; it also refuses nan/inf, which would write black images)
        for key in ('add_noise', 'sigma'):
            if getattr(args, key) is not None:
                parse_sigma(getattr(args, key), f'--{key}', DenoiseError)
        pairs = plan(args.input, args.output, args.force, bool(args.add_noise))
        denoiser = Denoiser(args.opt, tile=args.tile, sigma=args.sigma, added_sigma=args.add_noise)
        channels = denoiser.channels
        if args.max_megapixels is not None and not args.max_megapixels > 0:
            raise DenoiseError(f'--max-megapixels must be a positive number, got {args.max_megapixels}')
        max_pixels = MAX_PIXELS if args.max_megapixels is None else args.max_megapixels * 1e6
        # every input is decoded once up front, so a bad file late in a folder stops the run before the first
        # output is written (and the rerun needs no --force); decoding is cheap next to the network
        for src, _ in pairs:
            read_image(src, channels, max_pixels)
    except (DenoiseError, ModelLoadError, OptionFileError, CheckpointError) as exc:
        sys.exit(f'basicsr denoise: error: {exc}')
    if denoiser.sigma is not None:
        print(f'noise level given to the network: sigma {denoiser.sigma:g}', flush=True)
    written = []
    for src, dst in pairs:
        img = read_image(src, channels, max_pixels)
        if args.add_noise:
            x, noisy = add_noise(img, args.add_noise, args.seed)
            out = tensor2img(denoiser.run(x), rgb2bgr=False)
        else:
            out = denoiser(img if channels != 1 else img[..., 0])
        try:
            write_image(dst, out if channels == 1 else cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
            if args.add_noise:
                write_image(noisy_path(dst), noisy if channels == 1 else cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
        except OSError as exc:
            sys.exit(f'basicsr denoise: error: cannot write {exc.filename}: {exc.strerror}; {len(written)} of '
                     f'{len(pairs)} image(s) written before it (free space or choose another -o, then rerun with '
                     '--force)')
        written.append(dst)
        print(f'{src} -> {dst}', flush=True)
