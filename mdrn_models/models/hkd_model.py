"""``HKDModel``: heterogeneous knowledge distillation (paper §3.2-3.3, eq. 2-4; HADS and HMDS) as a BasicSR model
type (frozen teacher ``net_t``, feature hooks on both nets, 1x1 adapters). Options, behaviour: docs/distillation.md."""
import os
import re
from collections import OrderedDict
from copy import deepcopy

import torch
from torch import nn

import mdrn_arch  # noqa: F401  (first: basicsr compat alias, registers MDRN)
from basicsr.archs import build_network  # noqa: E402
from basicsr.losses import build_loss  # noqa: E402
from basicsr.utils import get_root_logger  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402
from mdrn_arch import enable_fused_inference  # noqa: E402

from mdrn_models.models import kd_similarity  # noqa: E402
from mdrn_models.models.denoise_model import DenoiseModel  # noqa: E402
from mdrn_models.models.feature_hooks import unwrap  # noqa: E402
from mdrn_models.models.kd_layout import KDLayout  # noqa: E402
from mdrn_models.utils.distributed import broadcast_module_state, read_on_rank0  # noqa: E402
from mdrn_models.utils.checkpoints import (CheckpointError, arch_desc, checkpoint_path, load_weights,  # noqa: E402
                                           read_checkpoint, shape_mismatches)

TEACHER_INPUTS = ('lq', 'lq_teacher')
KD_OPTION_KEYS = ('teacher_input', 'layers', 'dry_run_size')  # train.kd_opt keys read here, not by the loss
PROBE_IMAGES = 4  # crops of the first training batch on which each validation measures student-teacher similarity


def load_teacher_weights(net, load_path, strict=True, param_key='params', net_opt=None):
    """``load_weights`` for a teacher, every problem one line; non-strict only lets the checkpoint hold extra keys:
    every tensor of a frozen teacher must load (``fit_problem``)."""
    read_on_rank0(lambda: _check_teacher_path(load_path))  # (rank 0's disk holds it: see load_weights)
    try:
        used, _ = load_weights(net, load_path, strict, param_key, 't', net_opt)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    if used not in (None, param_key):
        get_root_logger().info(f'Teacher checkpoint has no [{param_key}]; using [{used}].')


def _check_teacher_path(load_path):
    if not load_path or not os.path.isfile(load_path):
        hint = ''
        if load_path and re.fullmatch(r'net_t_(\d+|latest)\.pth', os.path.basename(str(load_path))):
            hint = (' -- BasicSR\'s resume rewrote it; add network_t to path.ignore_resume_networks or run the '
                    'project\'s basicsr command')
        raise FileNotFoundError(f'teacher checkpoint not found: {load_path} (set path.pretrain_network_t){hint}')


@MODEL_REGISTRY.register()
class HKDModel(DenoiseModel):
    """Student ``net_g`` + frozen teacher ``net_t``; pixel loss + feature distillation through forward hooks."""
    OPTION_KEYS = {'train': ('kd_opt', *DenoiseModel.OPTION_KEYS['train']), 'val': DenoiseModel.OPTION_KEYS['val']}
    KD_OPTION_KEYS = KD_OPTION_KEYS

    # ------------------------------------------------------------------ setup
    def init_training_settings(self):
        self.check_kd_options(self.opt)
        kd_opt = self.opt['train'].get('kd_opt') or {}
        self.teacher_input = kd_opt.get('teacher_input', 'lq')
        self._setup_teacher()
        self._setup_layers()
        loss_opt = {k: v for k, v in kd_opt.items() if k not in KD_OPTION_KEYS}  # ours; the rest builds the loss
        self.cri_kd = build_loss({'type': 'L1Loss', 'loss_weight': 1.0, **loss_opt}).to(self.device)
        self._load_adapters()
        super().init_training_settings()  # EMA, pixel loss, optimizers (with adapters), schedulers

    @classmethod
    def check_train_options(cls, opt, nets):
        """The preflight's check before any folder exists: the options, then the layer pairs on the freshly built
        ``nets`` (``{'g': student, 't': teacher}``, random weights; ``KDLayout``). Training repeats both."""
        super().check_train_options(opt, nets)
        cls.check_kd_options(opt)
        KDLayout(opt, nets['g'], nets['t']).remove()

    @staticmethod
    def check_kd_options(opt):
        """Mistakes found from the options alone."""
        teacher_input = ((opt.get('train') or {}).get('kd_opt') or {}).get('teacher_input', 'lq')
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(f'train.kd_opt.teacher_input must be one of {TEACHER_INPUTS}, got {teacher_input!r}')
        ds = (opt.get('datasets') or {}).get('train') or {}
        if teacher_input != 'lq_teacher' and ds.get('sigma_teacher') is not None:
            # the dataset makes a lower-noise copy that nothing would read: the run would be HADS, not the HMDS asked
            raise ValueError(f'datasets.train.sigma_teacher is set (HMDS: the teacher sees a lower-noise copy) but '
                             f'train.kd_opt.teacher_input is {teacher_input!r}: set teacher_input: lq_teacher for '
                             'HMDS, or remove sigma_teacher for HADS')
        if teacher_input == 'lq_teacher' and ds.get('sigma_teacher') is None and \
                ds.get('type') == 'AWGNDenoisingDataset':
            raise ValueError('HMDS (train.kd_opt.teacher_input: lq_teacher) needs lq_teacher from the dataset: set '
                             'datasets.train.sigma_teacher to the noise level the teacher was trained at')
        num_gpu = opt.get('num_gpu')
        if not opt.get('dist') and isinstance(num_gpu, int) and num_gpu > 1:
            # BasicSR would wrap the nets in DataParallel, whose replicas each fire the feature hooks
            raise ValueError(f'num_gpu: {num_gpu} without a launcher means DataParallel, which HKDModel does not '
                             'support (its feature hooks fire once per replica): launch one process per GPU, '
                             f'torchrun --nproc_per_node={num_gpu} -m mdrn_cli train -opt X.yml --launcher '
                             'pytorch, or set num_gpu: 1')
        if not isinstance(opt.get('network_t'), dict):
            raise ValueError('HKDModel needs a teacher: add network_t (e.g. {type: MDRN, num_block: 8}) and '
                             'path.pretrain_network_t')
        if not (opt.get('path') or {}).get('pretrain_network_t'):
            raise ValueError('teacher checkpoint not set: set path.pretrain_network_t to the pretrained teacher .pth')

    def _setup_teacher(self):
        path_opt = self.opt['path']
        load_path = checkpoint_path(self.opt, 't')  # under --root if found there (parse_options)
        # its random init is overwritten by the checkpoint: drawn from a forked RNG, so that the seeded stream (the
        # training noise, via the loader's seeds) is the same as in the run without distillation
        with torch.random.fork_rng(devices=[]):
            self.net_t = build_network(deepcopy(self.opt['network_t']))
        load_teacher_weights(self.net_t, load_path, path_opt.get('strict_load_t', True),
                             path_opt.get('param_key_t', 'params'), self.opt['network_t'])
        # plain .to(): DDP refuses modules without trainable parameters (and the teacher needs no sync)
        self.net_t = self.net_t.to(self.device)
        self.net_t.eval()
        self.net_t.requires_grad_(False)
        enable_fused_inference(self.net_t)  # it runs under no_grad: MDRN's CPU fast path where it applies
        get_root_logger().info(f'Teacher {type(self.net_t).__name__} ({arch_desc(self.opt["network_t"])}) loaded '
                               f'from {load_path}, frozen.')

    def _setup_layers(self):
        layout = KDLayout(self.opt, self.net_g, self.net_t)
        self.kd_pairs, self.hooks_s, self.hooks_t = layout.pairs, layout.hooks_s, layout.hooks_t
        self.net_adapter = nn.ModuleDict({key: nn.Conv2d(c_s, c_t, 1)
                                          for key, (c_s, c_t) in layout.adapters.items()}).to(self.device)
        # not DDP-wrapped, and BasicSR seeds each rank differently: start from rank 0's
        broadcast_module_state(self.net_adapter)
        if len(self.net_adapter):
            get_root_logger().info('KD adapters (student -> teacher width): ' + ', '.join(
                f'{k}: {m.in_channels}->{m.out_channels}' for k, m in self.net_adapter.items()))

    def _load_adapters(self):
        # on resume, BasicSR's check_resume has pointed pretrain_network_g at the latest net_g_<iter>.pth
        load_path = self.opt['path'].get('pretrain_network_g')
        if not load_path or not len(self.net_adapter):
            return
        ckpt = read_checkpoint(load_path)
        own = self.net_adapter.state_dict()
        saved = ckpt.get('adapters') if isinstance(ckpt, dict) else None
        if saved is not None and (set(saved) != set(own) or shape_mismatches(own, saved)):
            # another run's adapters (other layer pairs or teacher widths): fine-tuning from it starts them afresh
            get_root_logger().warning(f'{load_path} holds KD adapters for other layer pairs or widths '
                                      f'({", ".join(saved)}); they start from scratch.')
        elif saved is not None:
            self.net_adapter.load_state_dict(saved, strict=True)
            get_root_logger().info(f'KD adapters loaded from {load_path}.')
        else:
            get_root_logger().info(f'{load_path} holds no KD adapters; they start from scratch.')

    def setup_optimizers(self):
        train_opt = self.opt['train']
        optim_params = []
        for k, v in self.net_g.named_parameters():
            if v.requires_grad:
                optim_params.append(v)
            else:
                get_root_logger().warning(f'Params {k} will not be optimized.')
        optim_params += list(self.net_adapter.parameters())
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, optim_params, **train_opt['optim_g'])
        self.optimizers.append(self.optimizer_g)

    # ------------------------------------------------------------------ training
    def feed_data(self, data):
        super().feed_data(data)
        if 'lq_teacher' in data:
            self.lq_teacher = data['lq_teacher'].to(self.device, non_blocking=True)
        elif hasattr(self, 'lq_teacher'):
            del self.lq_teacher

    def _teacher_batch(self):
        if self.teacher_input == 'lq':
            return self.lq
        if not hasattr(self, 'lq_teacher'):
            raise KeyError('HMDS (train.kd_opt.teacher_input: lq_teacher) but the batch has no lq_teacher; use '
                           'AWGNDenoisingDataset with datasets.train.sigma_teacher set')
        return self.lq_teacher

    def kd_features(self):
        """Run the student (with grad) and the frozen teacher (no grad) once; return (output, student feats,
        teacher feats). The hook stores are emptied by the read."""
        self.net_t.eval()
        output, feats_s = self.training_outputs(self.train_forward, self.lq)
        return output, feats_s, self.teacher_features(self._teacher_batch())

    def teacher_features(self, x):
        """The frozen teacher's hooked features ``{layer: tensor}`` on ``x`` (no grad)."""
        with torch.no_grad(), self.hooks_t.capturing():
            self.net_t(x)
        return self.hooks_t.pop()

    def training_outputs(self, net, x):
        """The student's output and its hooked features ``{layer: tensor}``, as training reads them."""
        with self.hooks_s.capturing():
            output = net(x)
        return output, self.hooks_s.pop()

    def kd_losses(self, feats_s, feats_t):
        """``OrderedDict(l_kd_<student layer>: loss)`` over the layer pairs."""
        losses = OrderedDict()
        for s, t, key in self.kd_pairs:
            fs, ft = feats_s[s], feats_t[t]
            if key in self.net_adapter:
                fs = self.net_adapter[key](fs)
            if fs.shape != ft.shape:
                raise RuntimeError(f'layer pair {s} -> {t}: student {list(fs.shape)} vs teacher {list(ft.shape)}')
            losses[f'l_kd_{key}'] = self.cri_kd(fs, ft.detach())
        return losses

    def optimize_parameters(self, current_iter):
        if not hasattr(self, 'kd_probe_batch'):  # the first batch this process trains on: the validation probe's
            self.kd_probe_batch = tuple(t[:PROBE_IMAGES].detach().clone() for t in (self.lq, self._teacher_batch(),
                                                                                      self.gt))
        self.optimizer_g.zero_grad()
        with self.autocast():  # the student's and the teacher's forward, and the losses
            self.output, feats_s, feats_t = self.kd_features()
            l_total, loss_dict = self.pixel_losses(self.output.float())
            kd = self.kd_losses({k: v.float() for k, v in feats_s.items()}, {k: v.float() for k, v in feats_t.items()})
        del feats_s, feats_t
        loss_dict.update(kd)
        loss_dict['l_kd'] = sum(kd.values())
        self.finish_step(sum(kd.values(), l_total), loss_dict, current_iter)

    def before_optimizer_step(self):
        if self.opt.get('dist') and len(self.net_adapter):  # adapters are not DDP-wrapped: average their grads
            ws = torch.distributed.get_world_size()
            for p in self.net_adapter.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= ws

    # ------------------------------------------------------------------ validation
    def validation(self, dataloader, current_iter, tb_logger, save_img):
        """SRModel's validation, then (rank 0) the distillation probe, to the log and under ``kd/`` in TensorBoard."""
        super().validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['rank'] != 0 or not hasattr(self, 'kd_probe_batch'):
            return
        probe = self.kd_probe()
        if tb_logger is not None:
            for key, values in probe.items():
                for name, value in values.items():
                    tb_logger.add_scalar(f'kd/{key}/{name}', value, current_iter)
        get_root_logger().info(f'KD probe ({len(self.kd_probe_batch[0])} fixed training crops): ' + '; '.join(
            f'{key}: ' + ', '.join(f'{name} {value:.4g}' for name, value in values.items())
            for key, values in probe.items()))

    @torch.no_grad()
    def kd_probe(self):
        """``{layer pair key: {loss, cosine, cka}}`` and ``{'all': {kd_over_pixel}}`` on ``kd_probe_batch``."""
        lq, lq_teacher, gt = self.kd_probe_batch
        student = unwrap(self.net_g)
        was_training = student.training
        student.eval()
        try:
            output, feats_s = self.training_outputs(student, lq)
            feats_t = self.teacher_features(lq_teacher)
        finally:
            student.train(was_training)
        probe = OrderedDict()
        for s, t, key in self.kd_pairs:
            fs, ft = feats_s[s], feats_t[t]
            mapped = self.net_adapter[key](fs) if key in self.net_adapter else fs
            probe[key] = {'loss': float(self.cri_kd(mapped, ft)), 'cosine': kd_similarity.cosine(mapped, ft),
                          'cka': kd_similarity.linear_cka(fs, ft)}
        if self.cri_pix:
            pixel = float(self.cri_pix(output, gt))
            probe['all'] = {'kd_over_pixel': sum(v['loss'] for v in probe.values()) / pixel if pixel else float('inf')}
        return probe

    # ------------------------------------------------------------------ saving
    def save(self, epoch, current_iter):
        nets, keys = [self.net_g], ['params']
        if hasattr(self, 'net_g_ema'):
            nets.append(self.net_g_ema)
            keys.append('params_ema')
        if len(getattr(self, 'net_adapter', ())):
            nets.append(self.net_adapter)
            keys.append('adapters')
        self.save_network(nets, 'net_g', current_iter, param_key=keys)
        self.save_training_state(epoch, current_iter)
