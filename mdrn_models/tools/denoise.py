"""Denoise your own images with a trained model: ``basicsr denoise``.

    basicsr denoise -opt options/test_mdrn_gray_s25_train400.yml -i noisy.png -o denoised.png
    basicsr denoise -opt options/test_mdrn_gray_s25_train400.yml -i photos/ -o denoised/ --tile 512
    basicsr denoise -opt options/test_mdrn_gray_s25_train400.yml -i clean.png -o denoised.png --add_noise 25

``-opt`` is the ``basicsr test`` option file of a weight (its ``network_g`` and ``path.pretrain_network_g``; any
registered arch works, and a bare MDRN/DnCNN/FFDNet ``.pth`` too). ``-i`` is an image or a folder of images, ``-o``
the output image or folder (a trailing ``/`` names a folder to create); existing outputs are refused unless
``--force``, and an output that is one of the inputs always. Every input is decoded before anything is written. Gray
models read images as gray, color models as RGB, 8 bits per channel as BasicSR's datasets read them (a 16-bit image
is reduced to 8 bits and an alpha channel is dropped); outputs are 8-bit, in the format of ``-o``'s extension (PNG in
an output folder; a ``.jpg`` is lossy). The shipped weights were trained for additive
white Gaussian noise of one sigma: ``--add_noise SIGMA`` adds exactly that noise (fixed ``--seed``) to a clean image
first, to see what the model does. A network with a noise-level input (FFDNet) is told ``--sigma SIGMA``: by default
the ``--add_noise`` level, else the option file's ``network_g.sigma``; a bare FFDNet ``.pth`` needs ``--sigma`` or
``--add_noise``. ``--tile SIZE`` runs large images tile by tile with 32 pixels of context (bounded memory, no seams); an image
whose header declares more than 100 MP is refused before it is decoded (``--max-megapixels`` raises the bound).
An option file runs as ``basicsr test`` runs it (``denoise_model.eval_forward``): e.g. with the ×8 self-ensemble under
``model_type: DenoiseModel`` and ``val.self_ensemble: true``.
"""
import os.path as osp
import sys

import cv2
import numpy as np
import torch

import mdrn_models  # noqa: F401  (compat alias + registrations)
from basicsr.utils import img2tensor, tensor2img

from mdrn_cli import parsers
from mdrn_models.tools import malloc_tuning
from mdrn_models.data.awgn_dataset import parse_sigma
from mdrn_models.integration.option_files import OptionFileError
from mdrn_arch.arch_util import in_channels
from mdrn_models.tools.model_loading import RANDOM_INIT, ModelLoadError, build_model, set_sigma, takes_sigma
from mdrn_models.models.denoise_model import eval_forward
from mdrn_models.utils.checkpoints import CheckpointError
from mdrn_models.utils.images import MAX_PIXELS, list_images, too_large, write_image


class DenoiseError(ValueError):
    """Bad command-line input, reported as one line before any compute."""


def noisy_path(dst):
    root, ext = osp.splitext(dst)
    return f'{root}_noisy{ext}'


def plan(inp, out, force, add_noise=False):
    """(input path, output path) pairs; every problem with the paths is raised here, before any model is built."""
    if osp.isdir(inp):
        names = list_images(inp, DenoiseError)
        folder_like = osp.isdir(out) or out.endswith(tuple(s for s in (osp.sep, osp.altsep) if s))
        if osp.isfile(out) or (not folder_like and cv2.haveImageWriter(out)):
            raise DenoiseError(f'-i is a folder, so -o must be a folder, but {out} '
                               f'{"is a file" if osp.isfile(out) else "names an image file"}: give a folder, e.g. '
                               f'{osp.splitext(out)[0]}/')
        pairs = [(osp.join(inp, n), osp.join(out, osp.splitext(n)[0] + '.png')) for n in names]
    elif osp.isfile(inp):
        # a trailing separator names a folder, even one not created yet (imwrite creates it)
        if osp.isdir(out) or out.endswith(tuple(s for s in (osp.sep, osp.altsep) if s)):
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


def denoise(forward, img, add_noise=None, seed=0, device='cpu'):
    """uint8 image -> (noisy input actually fed, ``forward``'s output), both uint8 in the image's channel order."""
    x = img2tensor(img.astype(np.float32) / 255., bgr2rgb=False, float32=True)[None].to(device)
    if add_noise:
        gen = torch.Generator().manual_seed(seed)
        x = x + (torch.randn(x.shape, generator=gen) * add_noise / 255.).to(device)  # not clipped, as in training
    with torch.no_grad():
        y = forward(x)
    return tensor2img(x.clamp(0, 1), rgb2bgr=False), tensor2img(y, rgb2bgr=False)


def noise_level(net, opt, args):
    """The sigma to tell ``net`` (None for a network without a noise-level input): --sigma, else --add_noise, else
    the option file's (the network as built from network_g)."""
    if not takes_sigma(net):
        if args.sigma is not None:
            raise DenoiseError(f'--sigma is for networks with a noise-level input (FFDNet); {type(net).__name__} '
                               'has none, so it would do nothing: remove --sigma')
        return None
    if args.sigma is not None or args.add_noise is not None:
        return args.sigma if args.sigma is not None else args.add_noise
    if not opt:  # a bare checkpoint: the 25 its network was built with is a placeholder, not the weight's level
        raise DenoiseError(f'{args.opt} is a bare {type(net).__name__} checkpoint with a noise-level input: pass '
                           '--sigma SIGMA, the noise level of your images (0-255 scale, e.g. 25)')
    return float(net.sigma)


def main(argv=None):
    args = parsers.denoise().parse_args(argv)
    malloc_tuning.keep_freed_memory()
    try:
        if args.tile is not None and (args.tile <= 0 or args.tile % parsers.TILE_ALIGN):
            raise DenoiseError(f'--tile must be a positive multiple of {parsers.TILE_ALIGN}, got {args.tile}')
        # the dataset's own range check ([1, 255]; it also refuses nan/inf, which would write black images)
        for key in ('add_noise', 'sigma'):
            if getattr(args, key) is not None:
                try:
                    parse_sigma(getattr(args, key), f'--{key}')
                except ValueError as exc:
                    raise DenoiseError(str(exc)) from None
        pairs = plan(args.input, args.output, args.force, bool(args.add_noise))
        net, weights, opt = build_model(args.opt)
        if weights == RANDOM_INIT:
            raise DenoiseError(f'{args.opt} has no path.pretrain_network_g: a randomly initialised network does not '
                               'denoise; set it to a trained checkpoint (.pth)')
        sigma = noise_level(net, opt, args)
        channels = in_channels(net) or 3
        # every input is decoded once up front, so a bad file late in a folder stops the run before the first
        # output is written (and the rerun needs no --force); decoding is cheap next to the network
        if args.max_megapixels is not None and not args.max_megapixels > 0:
            raise DenoiseError(f'--max-megapixels must be a positive number, got {args.max_megapixels}')
        max_pixels = MAX_PIXELS if args.max_megapixels is None else args.max_megapixels * 1e6
        for src, _ in pairs:
            read_image(src, channels, max_pixels)
    except (DenoiseError, ModelLoadError, OptionFileError, CheckpointError) as exc:
        sys.exit(f'basicsr denoise: error: {exc}')
    if sigma is not None:
        set_sigma(net, sigma)
        print(f'noise level given to the network: sigma {sigma:g}', flush=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = net.to(device)
    forward = eval_forward(net, opt, tile=args.tile and (args.tile, 32))
    written = []
    for src, dst in pairs:
        img = read_image(src, channels, max_pixels)
        noisy, out = denoise(forward, img, args.add_noise, args.seed, device)
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


if __name__ == '__main__':
    main()
