"""``Denoiser``: a trained denoiser as a Python object (``from mdrn_models import Denoiser``), what ``basicsr
denoise`` runs. Usage: README.md (Use a trained denoiser); the command: docs/cli.md.
"""
from copy import deepcopy

import numpy as np
import torch

import mdrn_arch.basicsr_compat  # noqa: F401  (before the first basicsr import; importing this module ran mdrn_models,
# the package, which registers the archs, datasets and models)
from basicsr.utils import img2tensor, tensor2img

from mdrn_cli import parsers
from mdrn_arch.arch_util import in_channels
from mdrn_models.models.denoise_model import eval_forward
from mdrn_models.models.training_step import inference_autocast
from mdrn_models.tools.model_loading import RANDOM_INIT, build_model, pick_device, set_sigma, takes_sigma

TILE_CONTEXT = 32  # pixels of context around each tile


class DenoiseError(ValueError):
    """Bad input to a denoiser, reported as one line before any compute."""


class Denoiser:
    """``Denoiser(weights)(image)``: a uint8 NumPy image HxW or HxWxC (gray; RGB for colour models), or a float tensor
    in 0..1 [C, H, W] or [N, C, H, W], -> the denoised one, same shape and type.

    ``weights``: a test option file (``network_g`` and ``path.pretrain_network_g``, any registered arch), a
    ``.safetensors`` weight, or a bare MDRN/DnCNN/FFDNet ``.pth``. ``device``: ``'auto'`` (CUDA when available),
    ``'cpu'``, ``'cuda'``, ``'cuda:1'``. ``tile``: tile side (a multiple of 8; 32 px of context, no seams), else the
    option file's ``val.tile``. ``half``: autocast (fp16 on CUDA, bf16 on the CPU). ``sigma``: the level told to a
    noise-level input (FFDNet; default: the option file's). ``self_ensemble``: the ×8 flips/rotations (default: the
    option file's ``val.self_ensemble``). ``added_sigma``: the level of noise the caller added itself (``basicsr
    denoise --add_noise``), told to a noise-level input when ``sigma`` is not given. Every problem is a one-line
    ``ValueError`` (``DenoiseError``) before any compute.
    """

    def __init__(self, weights, device='auto', tile=None, half=False, sigma=None, self_ensemble=None,
                 added_sigma=None):
        if tile is not None and (not isinstance(tile, int) or tile <= 0 or tile % parsers.TILE_ALIGN):
            raise DenoiseError(f'--tile must be a positive multiple of {parsers.TILE_ALIGN}, got {tile!r} (in '
                               'Python: tile=)')
        net, source, opt = build_model(str(weights))
        if source == RANDOM_INIT:
            raise DenoiseError(f'{weights} has no path.pretrain_network_g: a randomly initialised network does not '
                               'denoise; set it to a trained checkpoint (.pth)')
        self.sigma = self._noise_level(net, opt, weights, sigma, added_sigma)
        if self.sigma is not None:
            set_sigma(net, self.sigma)
        if self_ensemble is not None:  # as basicsr test runs it: DenoiseModel's val.self_ensemble
            opt = deepcopy(opt)
            opt.setdefault('val', {})['self_ensemble'] = bool(self_ensemble)
            if self_ensemble:
                opt['model_type'] = 'DenoiseModel'
        self.device = pick_device(device, DenoiseError)
        self.net, self.source, self.options = net.to(self.device), source, opt
        self.channels = in_channels(net) or 3
        self.half = half
        self._forward = eval_forward(self.net, opt, tile=tile and (tile, TILE_CONTEXT))

    @staticmethod
    def _noise_level(net, opt, weights, sigma, added_sigma):
        """The sigma to tell ``net`` (None without a noise-level input): ``sigma``, else ``added_sigma``, else the
        ``network_g.sigma`` its option file or safetensors header built it with."""
        if not takes_sigma(net):
            if sigma is not None:
                raise DenoiseError(f'--sigma is for networks with a noise-level input (FFDNet); '
                                   f'{type(net).__name__} has none, so it would do nothing: remove --sigma (in Python: '
                                   'sigma=)')
            return None
        if sigma is not None or added_sigma is not None:
            return float(sigma if sigma is not None else added_sigma)
        if not opt:  # a bare .pth: the 25 its network was built with is a placeholder, not the weight's level
            raise DenoiseError(f'{weights} is a bare {type(net).__name__} checkpoint with a noise-level input: pass '
                               '--sigma SIGMA, the noise level of your images (0-255 scale, e.g. 25)')
        return float(net.sigma)

    def run(self, x):
        """float [N, C, H, W] batch (0..1, not clipped) -> the denoised batch, on the batch's device."""
        with torch.no_grad(), inference_autocast(self.device.type, self.half):
            return self._forward(x.to(self.device)).float().to(x.device)

    def __call__(self, image):
        if isinstance(image, torch.Tensor):
            if image.dim() not in (3, 4) or image.shape[-3] != self.channels or not image.is_floating_point():
                raise DenoiseError(f'a tensor input must be float [C, H, W] or [N, C, H, W] with C={self.channels} '
                                   f'in 0..1, got {image.dtype} {list(image.shape)}')
            return self.run(image[None] if image.dim() == 3 else image)[0 if image.dim() == 3 else slice(None)]
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != self.channels):
            raise DenoiseError(f'an image must be uint8 HxW{"" if self.channels == 1 else "x3 (RGB)"} or '
                               f'HxWx{self.channels}, got {image.dtype} {list(image.shape)}')
        x = img2tensor((image[..., None] if image.ndim == 2 else image).astype(np.float32) / 255., bgr2rgb=False,
                       float32=True)[None]
        out = tensor2img(self.run(x), rgb2bgr=False)
        return out.reshape(image.shape)
