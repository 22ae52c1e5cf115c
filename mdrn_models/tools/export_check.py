"""The check ``basicsr export`` runs on the file it wrote: its image, noise level and two sizes, and the comparison of
the exported model with the PyTorch network (``compare_at``); docs/cli.md (Export)."""
import os.path as osp

import numpy as np
import torch

from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img

from mdrn_models.data.awgn_dataset import eval_noise, parse_sigma
from mdrn_models.tools.denoise import DenoiseError, read_image
from mdrn_models.tools.model_loading import takes_sigma
from mdrn_models.utils.images import list_images

CHECK_HW = (250, 190)  # the check image (height, width): even, no multiple of 8 (MDRN pads 6 rows and 2 columns)
SECOND_HW = (96, 128)  # the second size: multiples of 8 (no padding) -- the dynamic height/width at work


class ExportError(ValueError):
    """Bad input or a failed export/check, reported as one line."""


def first_eval_dataset(opt):
    """The options of the option file's first test/val dataset (BasicSR's phase: the key before '_'), or None."""
    for key, ds in (opt.get('datasets') or {}).items():
        if str(key).split('_')[0] in ('test', 'val') and isinstance(ds, dict):
            return ds
    return None


def center_crop(img, hw):
    h, w = min(hw[0], img.shape[0]), min(hw[1], img.shape[1])
    y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[y:y + h, x:x + w]


def check_image(image, opt, channels):
    """(uint8 HxWxC image in the model's channel order, where it came from, the dataset it stands for or None)."""
    if image:
        if not osp.isfile(image):
            raise ExportError(f"--image '{image}' does not exist: pass an image file")
        try:
            return read_image(image, channels, raise_it='crop or downscale it for the check'), image, None
        except DenoiseError as err:
            raise ExportError(str(err).replace(' (nothing was written)', '')) from None
    ds = first_eval_dataset(opt)
    folder = (ds or {}).get('dataroot_gt')
    if folder and osp.isdir(str(folder)) and not str(folder).endswith('.lmdb'):
        try:
            name = list_images(str(folder))[0]
        except ValueError:
            name = None
        if name:
            path = osp.join(str(folder), name)
            try:
                return read_image(path, channels, raise_it='pass a smaller --image for the check'), path, ds
            except DenoiseError as err:
                raise ExportError(f'{err.args[0].replace(" (nothing was written)", "")}, or pass --image') from None
    import skimage.data
    name = 'astronaut' if channels == 3 else 'camera'
    img = getattr(skimage.data, name)()  # astronaut: RGB, camera: gray
    img = img[..., None] if img.ndim == 2 else img
    why = f' ({folder} not found)' if folder else ''
    return img, f'scikit-image {name}{why}', ds


def noise_level(sigma_arg, ds, net):
    """(sigma, noise seed) of the check: --sigma, else the dataset's fixed sigma, else FFDNet's, else 25."""
    seed = (ds or {}).get('noise_seed', 0)
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0
    if sigma_arg is not None:
        return sigma_arg, seed
    try:
        low, high = parse_sigma((ds or {}).get('sigma'))
        if low == high:
            return low, seed
    except ValueError:
        pass
    return (float(net.sigma) if takes_sigma(net) else 25.0), seed


def check_sizes(shape):
    """The two crops of the check, (height, width) each: CHECK_HW and SECOND_HW, cut to the image; a smaller second
    one where the image is too small for the two to differ."""
    first = tuple(min(c, s) for c, s in zip(CHECK_HW, shape))
    second = tuple(min(c, s) for c, s in zip(SECOND_HW, shape))
    if second == first:
        second = tuple(max(s * 3 // 4, 1) for s in first)
    return first, second


def compare_at(module, run, img, hw, sigma, seed, sigma_input):
    """(max |exported - PyTorch|, PSNR of PyTorch, PSNR of exported) on the ``hw`` centre crop of ``img`` + AWGN."""
    clean = img2tensor(center_crop(img, hw).astype(np.float32) / 255., bgr2rgb=False, float32=True)[None]
    noisy = clean + eval_noise(clean.shape, seed, 0) * (sigma / 255.)  # as AWGNDenoisingDataset: not clipped
    with torch.no_grad():
        ref = module(noisy, sigma=sigma) if sigma_input else module(noisy)
    out = run(noisy, sigma if sigma_input else None)
    if out.shape != ref.shape:
        raise ExportError(f'the exported model gives a {list(out.shape)} output for a {list(noisy.shape)} input, '
                          f'PyTorch {list(ref.shape)}')
    gt = tensor2img(clean, rgb2bgr=False)
    psnr = [calculate_psnr(tensor2img(o.float(), rgb2bgr=False), gt, crop_border=0, test_y_channel=False)
            for o in (ref, out)]
    return float((out.float() - ref.float()).abs().max()), psnr[0], psnr[1]
