"""``DenoiseModel`` (``SRModel`` with the ×8 self-ensemble and tiling at test time) and ``eval_forward``, that test
forward as a function, so ``basicsr test``, ``compare`` and ``denoise`` run the same thing. Options: docs/cli.md
(tiling), docs/training.md (MDRN+)."""
from collections import OrderedDict
from functools import partial

import torch

import mdrn_arch  # noqa: F401  (first: basicsr compat alias, registers MDRN)
from basicsr.models.sr_model import SRModel  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402
from mdrn_arch import enable_fused_inference  # noqa: E402
from mdrn_cli.parsers import TILE_ALIGN  # noqa: E402  (the flag's choice list; a module without dependencies)
from mdrn_arch.mdrn_arch import pad_to_multiple  # noqa: E402

from mdrn_models.models.training_step import TRAIN_KEYS, TrainingStep, check_training_step_options  # noqa: E402


def tile_options(opt):
    """``val.tile`` -> (size, overlap) or None; a one-line ValueError for values that cannot work."""
    tile = (opt.get('val') or {}).get('tile')
    if not tile:
        return None
    if not isinstance(tile, dict):
        raise ValueError(f'val.tile must be a mapping such as {{size: 512, overlap: 32}}, got {tile!r}')
    unknown = sorted(set(tile) - {'size', 'overlap'})
    if unknown:
        raise ValueError(f"val.tile has no option '{unknown[0]}': its options are size and overlap")
    size, overlap = tile.get('size'), tile.get('overlap', 32)
    for key, value in (('size', size), ('overlap', overlap)):
        if not isinstance(value, int) or value < (key == 'size') or value % TILE_ALIGN:
            raise ValueError(f'val.tile.{key} must be a {"positive " * (key == "size")}multiple of {TILE_ALIGN} '
                             f'(pixels), got {value!r}')
    return size, overlap


def tiled_forward(net, x, size, overlap):
    """``net`` on ``size``-pixel tiles of ``x`` read with ``overlap`` pixels of context, keeping each tile's core: the
    cores partition the image (no seams); it is the whole-image output where the receptive field fits ``overlap``."""
    h, w = x.shape[-2:]
    out = None
    for y0 in range(0, h, size):
        for x0 in range(0, w, size):
            y1, x1 = min(y0 + size, h), min(x0 + size, w)
            ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
            patch = net(x[..., ya:min(y1 + overlap, h), xa:min(x1 + overlap, w)])
            if out is None:
                out = x.new_empty(*x.shape[:-3], patch.shape[-3], h, w)
            out[..., y0:y1, x0:x1] = patch[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


def self_ensemble(net, x):
    """``net`` averaged over the 8 flips/rotations of ``x``, each mapped back exactly (non-square inputs too)."""
    outputs = []
    for flip in (False, True):
        xf = x.flip(-1) if flip else x
        for k in range(4):
            y = net(torch.rot90(xf, k, dims=(-2, -1)))
            y = torch.rot90(y, -k, dims=(-2, -1))
            outputs.append(y.flip(-1) if flip else y)
    return torch.stack(outputs, 0).mean(0)


def window_padded(net, window):
    """``net`` on ``x`` padded (reflect, bottom/right) to a multiple of ``window`` and cropped back, as BasicSR's
    ``SwinIRModel.test`` runs SwinIR (whose attention windows need it)."""

    def forward(x):
        h, w = x.shape[-2:]
        return net(pad_to_multiple(x, window))[..., :h, :w]

    return forward


def eval_forward(net, opt, tile=None):
    """The function of a batch that testing ``opt``'s model runs on ``net``: padded to its attention window if any
    (``network_g.window_size``, else the arch's: SwinIR), plus ``val.tile`` and ``val.self_ensemble`` under
    ``DenoiseModel`` types. ``tile`` = (size, overlap) tiles any model (``denoise --tile``) in place of ``val.tile``."""
    forward = net
    window = (opt.get('network_g') or {}).get('window_size')
    if window is None:  # the arch's default, as its blocks hold it (BasicSR's SwinIR: 7; the top module has none)
        window = next((m.window_size for m in net.modules() if isinstance(getattr(m, 'window_size', None), int)),
                      None)
    if isinstance(window, int) and window > 1:
        forward = window_padded(forward, window)
    denoise_model = issubclass(MODEL_REGISTRY.get(opt.get('model_type', 'SRModel')), DenoiseModel)
    tile = tile or (tile_options(opt) if denoise_model else None)
    if tile:
        forward = partial(tiled_forward, forward, size=tile[0], overlap=tile[1])
    if denoise_model and (opt.get('val') or {}).get('self_ensemble', False):
        forward = partial(self_ensemble, forward)
    return forward


class _TestForward(torch.nn.Module):
    def __init__(self, net, forward):
        super().__init__()
        self.net, self._forward = net, forward

    def forward(self, x):
        return self._forward(x)


def network_forward(net, opt=None):
    """``eval_forward`` of ``opt``'s network alone (no tile, no self-ensemble: e.g. SwinIR inside its window padding)
    as a module, so that ``.to``, ``channels_last``, ``torch.compile`` and tracing apply to it; ``net`` itself when
    it needs no padding (or is such a module already)."""
    if isinstance(net, _TestForward):
        return net
    forward = eval_forward(net, {'network_g': (opt or {}).get('network_g')})
    return net if forward is net else _TestForward(net, forward).eval()


@MODEL_REGISTRY.register()
class DenoiseModel(TrainingStep, SRModel):
    """SRModel for same-size restoration, testing with ``val.self_ensemble`` (MDRN+) and ``val.tile``, training with
    ``train.amp`` / ``grad_clip`` / ``compile`` (``training_step``)."""
    # read besides SRModel's (the preflight refuses unknown keys)
    OPTION_KEYS = {'train': TRAIN_KEYS, 'val': ('self_ensemble', 'tile', 'amp')}

    @classmethod
    def check_val_options(cls, opt):
        """Called by the ``basicsr`` command's preflight, before any folder is created."""
        tile_options(opt)

    @classmethod
    def check_train_options(cls, opt, nets):
        """Called by the preflight when training (``nets``: the freshly built networks)."""
        check_training_step_options(opt)

    def __init__(self, opt):
        tile_options(opt)  # refuses bad val.tile values before any network is built
        super().__init__(opt)
        self._use_fast_path()  # (basicsr test: no training settings)

    def _use_fast_path(self):
        """MDRN's CPU inference fast path (validation, ``basicsr test``; a no-op for other networks), chosen by this
        model type. Before the training step is set up: its compile check traces the network as it will run."""
        if self.device.type == 'cpu':
            enable_fused_inference(self.get_bare_model(self.net_g))

    def init_training_settings(self):
        self._use_fast_path()
        super().init_training_settings()
        self.setup_training_step()

    def feed_data(self, data):
        """SRModel's, but a pinned batch (``pin_memory``: on for CUDA runs) is copied while the GPU still runs the
        previous step, where a plain copy would wait for it (a host synchronisation per step)."""
        self.lq = data['lq'].to(self.device, non_blocking=True)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device, non_blocking=True)

    def pixel_losses(self, output):
        """SRModel's losses of ``output`` against ``gt``: (total, ``OrderedDict`` of the terms)."""
        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            loss_dict.update((k, v) for k, v in (('l_percep', l_percep), ('l_style', l_style)) if v is not None)
        return sum(loss_dict.values()), loss_dict

    def optimize_parameters(self, current_iter):
        """SRModel's step, under ``train.amp`` and through ``train_forward``, with the gradient norm."""
        self.optimizer_g.zero_grad()
        with self.autocast():
            self.output, _ = self.training_outputs(self.train_forward, self.lq)
            l_total, loss_dict = self.pixel_losses(self.output.float())
        self.finish_step(l_total, loss_dict, current_iter)

    def test(self):
        net = self.net_g if getattr(self, 'net_g_ema', None) is None else self.net_g_ema
        was_training = net.training
        net.eval()
        with torch.no_grad(), self.test_autocast():
            self.output = eval_forward(net, self.opt)(self.lq).float()
        if was_training and net is self.net_g:
            net.train()
