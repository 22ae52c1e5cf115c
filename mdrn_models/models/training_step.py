"""The training step of this plugin's model types, with what BasicSR 1.4.2 lacks (mixed precision is its open issue
#704): ``DenoiseModel`` and ``HKDModel`` inherit :class:`TrainingStep`. Options::

    train:
      amp: bf16            # bf16 | fp16 | ~ (default ~: fp32). Autocast around the forward passes (student and
                           # teacher) and the losses; fp16 with a GradScaler, whose state the training states carry
      grad_clip: 0.5       # ~ (default) or the max global norm of the trained parameters' gradients (student and
                           # KD adapters); the norm is logged as grad_norm either way
      compile: false       # torch.compile the student's training forward; checkpoints keep plain parameter names
    val:
      amp: false           # validate and test under autocast (train.amp's dtype; else fp16 on CUDA, bf16 on the
                           # CPU); default: fp32, whatever train.amp says

A step whose gradients are not finite is skipped (no parameter changes) and counted in a warning; with fp16 the
GradScaler lowers its scale after such a step, so a few at the start of a run are normal.
"""
import math
import os.path as osp

import torch

import basicsr.models.base_model as base_model
from basicsr.utils import get_root_logger
from mdrn_arch.arch_util import in_channels

from mdrn_models.models.feature_hooks import unwrap
from mdrn_models.utils.messages import first_line

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
TRAIN_KEYS = ('amp', 'grad_clip', 'compile')


def cpu_has_native_bf16():
    """Whether oneDNN runs bf16 natively here (AVX512-BF16, AMX or AVX-NE-CONVERT); elsewhere bf16 convs are slow
    reference kernels."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_cuda(opt):
    return opt.get('num_gpu') != 0 and torch.cuda.is_available()


def check_training_step_options(opt):
    """One-line ``ValueError`` for ``train.amp`` / ``grad_clip`` / ``compile`` and ``val.amp`` values that cannot
    work on this machine (called by the preflight and when training starts)."""
    train, val = opt.get('train') or {}, opt.get('val') or {}
    amp = train.get('amp')
    if amp not in (None, *AMP_DTYPES):
        raise ValueError(f"train.amp must be bf16, fp16 or ~ (fp32), got {amp!r}")
    cuda = uses_cuda(opt)
    if amp == 'fp16' and not cuda:
        raise ValueError('train.amp: fp16 needs a CUDA GPU (float16 autocast with a GradScaler); on the CPU use bf16 '
                         'where it has bf16 instructions, or remove train.amp')
    if amp == 'bf16' and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f'train.amp: bf16 is not supported by {torch.cuda.get_device_name()}: use fp16')
    if amp == 'bf16' and not cuda and not cpu_has_native_bf16():
        raise ValueError('train.amp: bf16 on this CPU has no native bf16 instructions (oneDNN needs AVX512-BF16, AMX '
                         'or AVX-NE-CONVERT): it would train slower than fp32; remove train.amp on this machine')
    clip = train.get('grad_clip')
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0
                             or not math.isfinite(clip)):
        raise ValueError(f'train.grad_clip must be a positive number (the max gradient norm) or ~, got {clip!r}')
    for key, value in (('train.compile', train.get('compile', False)), ('val.amp', val.get('amp', False))):
        if not isinstance(value, bool):
            raise ValueError(f'{key} must be true or false, got {value!r}')


class TrainingStep:
    """Mixed precision, gradient norm (clipping, non-finite skip) and a compiled training forward for a BasicSR
    model with ``net_g`` and ``optimizer_g``. Call :meth:`setup_training_step` in ``init_training_settings``; run the
    forward and losses under :meth:`autocast` through :attr:`train_forward`, then :meth:`finish_step`."""

    def setup_training_step(self):
        check_training_step_options(self.opt)
        train_opt = self.opt['train']
        self.amp_dtype = AMP_DTYPES.get(train_opt.get('amp'))
        self.grad_clip = train_opt.get('grad_clip')
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.skipped_steps = 0
        # a compiled view of the same module: the parameters and their names (checkpoints) stay net_g's own
        # (static shapes: training crops have one size, and inductor fails on MDRN's padding with symbolic sizes)
        self.train_forward = self.net_g
        if train_opt.get('compile', False):
            self.train_forward = self._checked_compile(torch.compile(self.net_g, dynamic=False))
        if self.amp_dtype is not None or self.train_forward is not self.net_g:
            get_root_logger().info(f"Training step: autocast {train_opt.get('amp') or 'off'}"
                                   f"{' with a GradScaler' if self.scaler.is_enabled() else ''}, torch.compile "
                                   f"{'on' if self.train_forward is not self.net_g else 'off'}, grad_clip "
                                   f'{self.grad_clip}.')

    def _checked_compile(self, compiled):
        """``compiled`` if it gives the eager network's output on a random batch of the training shape, else the eager
        network with one logged line: inductor's generated code is this machine's (CPU instruction set, compiler,
        GPU), and a wrong kernel would train on garbage. Checked under ``no_grad`` (the training graph is compiled at
        the first step)."""
        ds = (self.opt.get('datasets') or {}).get('train') or {}
        size, batch = ds.get('gt_size') or 64, ds.get('batch_size_per_gpu') or 1
        channels = in_channels(unwrap(self.net_g)) or 1
        x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0)).to(self.device)
        try:
            with torch.no_grad():
                got, ref = compiled(x), self.net_g(x)
            problem = None if torch.isfinite(got).all() and torch.allclose(got, ref, rtol=1e-3, atol=1e-4) else \
                f'its output differs from the eager network\'s by up to {float((got - ref).abs().max())}'
        except Exception as exc:  # noqa: BLE001  (whatever inductor raises on this machine: train uncompiled)
            problem = f'it failed: {type(exc).__name__}: {first_line(exc)}'
        if problem is None:
            return compiled
        get_root_logger().warning(f'train.compile: torch.compile of {type(unwrap(self.net_g)).__name__} steps aside '
                                  f'on this machine ({problem}); training runs uncompiled.')
        return self.net_g

    def autocast(self, enabled=True):
        """Autocast to ``train.amp``'s dtype (a no-op without it)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=enabled and self.amp_dtype is not None)

    def before_optimizer_step(self):
        """Called between backward and the gradient norm (``HKDModel`` averages its adapters' gradients here)."""

    def backward_and_step(self, loss, current_iter):
        """Backward (scaled under fp16), the global gradient norm of every parameter the optimizer holds (clipped to
        ``train.grad_clip``), and the optimizer step unless that norm is not finite. Returns the norm."""
        self.scaler.scale(loss).backward()
        self.before_optimizer_step()
        self.scaler.unscale_(self.optimizer_g)
        params = [p for group in self.optimizer_g.param_groups for p in group['params'] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf)
        if torch.isfinite(norm):
            self.scaler.step(self.optimizer_g)
        else:
            self.skipped_steps += 1
            self.optimizer_g.zero_grad()
            get_root_logger().warning(
                f'iteration {current_iter}: the gradient norm is {float(norm)}; step skipped ({self.skipped_steps} so '
                'far)' + (': the fp16 GradScaler lowers its scale, a few such steps at the start are normal'
                          if self.scaler.is_enabled() else ''))
        self.scaler.update()
        return norm

    def finish_step(self, loss, loss_dict, current_iter):
        """:meth:`backward_and_step`, then SRModel's end of a step: the losses reduced across processes into
        ``log_dict`` (where the ``basicsr`` command stops the run at a non-finite loss), with ``grad_norm`` when
        finite (a skipped step is no reason to stop), and the EMA update."""
        norm = self.backward_and_step(loss, current_iter)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if torch.isfinite(norm):
            self.log_dict['grad_norm'] = float(norm)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test_autocast(self):
        """Autocast for validation and testing, only with ``val.amp``: to ``train.amp``'s dtype, else fp16 on CUDA and
        bf16 on the CPU."""
        dtype = AMP_DTYPES.get((self.opt.get('train') or {}).get('amp')) or \
            (torch.float16 if self.device.type == 'cuda' else torch.bfloat16)
        return torch.autocast(self.device.type, dtype=dtype, enabled=bool((self.opt.get('val') or {}).get('amp')))

    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the GradScaler's (fp16), saved through ``base_model.torch`` (the ``basicsr``
        command makes that save atomic)."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if getattr(self, 'scaler', None) is not None and self.scaler.is_enabled():
            state['scaler'] = self.scaler.state_dict()
        base_model.torch.save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if 'scaler' in resume_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(resume_state['scaler'])
        elif self.scaler.is_enabled():
            get_root_logger().info('The training state holds no GradScaler state (saved without fp16): the scaler '
                                   'starts afresh.')
