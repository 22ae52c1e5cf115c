"""``TrainingStep``, the training step ``DenoiseModel`` and ``HKDModel`` inherit, with what BasicSR 1.4.2 lacks:
``train.amp`` (its issue #704), ``grad_clip``, ``compile``, ``val.amp``. Options: docs/training.md."""
import contextlib
import math
import os.path as osp
from collections import OrderedDict

import torch
from torch.nn.parallel import DistributedDataParallel

import basicsr.models.base_model as base_model
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from mdrn_arch.arch_util import in_channels
from mdrn_arch.capabilities import cpu_has_native_bf16, cuda_has_native_bf16

from mdrn_models.models.feature_hooks import unwrap
from mdrn_models.utils.compiling import compile_static
from mdrn_models.utils.distributed import all_ranks_agree, reduce_step, stop_if_asked
from mdrn_models.utils.messages import first_line

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
INFERENCE_AMP = {'cuda': torch.float16, 'cpu': torch.bfloat16}  # bf16 on the CPU: fp16 convs are not fast there
TRAIN_KEYS = ('amp', 'grad_clip', 'compile')


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
    if amp == 'bf16' and cuda and not cuda_has_native_bf16():
        raise ValueError(f'train.amp: {torch.cuda.get_device_name()} has no native bf16 (it would emulate it, slower '
                         'than fp32): use train.amp: fp16')
    if amp == 'bf16' and not cuda and not cpu_has_native_bf16():
        raise ValueError('train.amp: bf16 on this CPU has no native bf16 instructions (AVX512-BF16, AMX or '
                         'AVX-NE-CONVERT): it would train slower than fp32; remove train.amp on this machine')
    clip = train.get('grad_clip')
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0
                             or not math.isfinite(clip)):
        raise ValueError(f'train.grad_clip must be a positive number (the max gradient norm) or ~, got {clip!r}')
    for key, value in (('train.compile', train.get('compile', False)), ('val.amp', val.get('amp', False))):
        if not isinstance(value, bool):
            raise ValueError(f'{key} must be true or false, got {value!r}')


def inference_autocast(device_type, enabled=True, dtype=None):
    """Autocast for inference (validation, test, the tools' --amp): ``dtype``, else ``INFERENCE_AMP``'s."""
    return torch.autocast(device_type, dtype=dtype or INFERENCE_AMP[device_type], enabled=enabled)


def stop_if_non_finite(log):
    """Stop the run in one line at a non-finite value in ``log`` (name -> float). Called with values every rank holds
    alike (averaged over the ranks), so all ranks stop at the same iteration."""
    bad = next(((k, v) for k, v in log.items() if not math.isfinite(v)), None)
    if bad is not None:
        raise SystemExit(f'error: training stopped: loss {bad[0]} is {bad[1]} (non-finite); nothing of this iteration '
                         'was saved and the last checkpoint is kept: lower train.optim_g.lr, or check the data and the '
                         'initial weights')


def compile_mismatch(got, ref, dtype):
    """Why the compiled outputs ``got`` are not the eager ``ref`` (dicts of tensors), or None. Tolerance: 1e-3 of
    the largest eager value in fp32; eight units of the last place of ``dtype`` under autocast (kernels that fuse
    differently round differently); a wrong kernel (Inf, garbage) is off by far more."""
    tol = 1e-3 if dtype is None else 8 * torch.finfo(dtype).eps
    for name, r in ref.items():
        g, r = got[name].detach().float(), r.detach().float()
        if not torch.isfinite(g).all():
            return f'its {name} is not finite'
        err = float((g - r).abs().max() / r.abs().max().clamp_min(1e-6))
        if err > tol:
            return f'its {name} differs from the eager network\'s by {err:.2g} of its largest value (tolerance {tol:g})'
    return None


class TrainingStep:
    """Mixed precision, gradient norm (clipping, non-finite skip) and a compiled training forward for a BasicSR
    model with ``net_g`` and ``optimizer_g``. Call :meth:`setup_training_step` in ``init_training_settings``; run the
    forward through :meth:`training_outputs` of :attr:`train_forward` and the losses under :meth:`autocast`, then
    :meth:`finish_step`."""

    def setup_training_step(self):
        check_training_step_options(self.opt)
        train_opt = self.opt['train']
        self.amp_dtype = AMP_DTYPES.get(train_opt.get('amp'))
        self.grad_clip = train_opt.get('grad_clip')
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.skipped_steps = 0
        # a compiled view of the same module: the parameters and their names (checkpoints) stay net_g's own
        self.train_forward = self.net_g
        if train_opt.get('compile', False):
            self.train_forward = self._checked_compile(compile_static(self.net_g))
        if self.amp_dtype is not None or self.train_forward is not self.net_g:
            get_root_logger().info(f"Training step: autocast {train_opt.get('amp') or 'off'}"
                                   f"{' with a GradScaler' if self.scaler.is_enabled() else ''}, torch.compile "
                                   f"{'on' if self.train_forward is not self.net_g else 'off'}, grad_clip "
                                   f'{self.grad_clip}.')

    def training_outputs(self, net, x):
        """What one training forward of ``net`` on ``x`` gives the losses: (output, ``{layer: feature}``; ``HKDModel``
        hooks features). Training and the compile check both run it, so they run the same graph."""
        return net(x), {}

    def _compile_check_outputs(self, net, x):
        output, feats = self.training_outputs(net, x)
        return {'output': output, **{f'feature {k!r}': v for k, v in feats.items()}}

    def _checked_compile(self, compiled):
        """``compiled`` if the graph that trains gives the eager network's outputs, else the eager network with one
        logged line: inductor's code is this machine's, and a wrong kernel would train on garbage. The check runs
        :meth:`training_outputs` and a backward as training does, so the first step reuses the graph it compiles
        (docs/training.md). Every rank takes the decision together."""
        ds = (self.opt.get('datasets') or {}).get('train') or {}
        size, batch = ds.get('gt_size') or 64, ds.get('batch_size_per_gpu') or 1
        bare = unwrap(self.net_g)
        x = torch.rand(batch, in_channels(bare) or 1, size, size,
                       generator=torch.Generator().manual_seed(0)).to(self.device)
        # no_sync: no gradient all-reduce in the check, so a process where it fails meets the others in the vote below
        no_sync = self.net_g.no_sync() if isinstance(self.net_g, DistributedDataParallel) else contextlib.nullcontext()
        try:
            with no_sync:
                with self.autocast():
                    got = self._compile_check_outputs(compiled, x)
                sum(t.float().mean() for t in got.values()).mul(0).backward()  # compiles the backward (zero grads)
            with torch.no_grad(), self.autocast():
                ref = self._compile_check_outputs(bare, x)
            problem = compile_mismatch(got, ref, self.amp_dtype)
        except Exception as exc:  # noqa: BLE001  (whatever inductor raises on this machine: train uncompiled)
            problem = f'it failed: {type(exc).__name__}: {first_line(exc)}'
        finally:
            bare.zero_grad(set_to_none=True)
        if all_ranks_agree(problem is None, self.device):
            return compiled
        get_root_logger().warning(f'train.compile: torch.compile of {type(bare).__name__} steps aside on this machine '
                                  f'({problem or "on another rank"}); training runs uncompiled.')
        return self.net_g

    def autocast(self, enabled=True):
        """Autocast to ``train.amp``'s dtype (a no-op without it)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=enabled and self.amp_dtype is not None)

    def before_optimizer_step(self):
        """Called between backward and the gradient norm (``HKDModel`` averages its adapters' gradients here)."""

    def finish_step(self, loss, loss_dict, current_iter):
        """Backward (scaled under fp16), the gradient norm of the optimizer's parameters (clipped to ``grad_clip``),
        the losses averaged over the ranks; then one read-back of values every rank holds alike: a stop request or a
        non-finite loss stops the run, a non-finite norm skips the step, else the optimizer steps; then the EMA.
        ``log_dict`` keeps tensors until BasicSR logs them (:meth:`get_current_log`)."""
        self.scaler.scale(loss).backward()
        self.before_optimizer_step()
        self.scaler.unscale_(self.optimizer_g)
        params = [p for group in self.optimizer_g.param_groups for p in group['params'] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf).to(self.device)
        values = reduce_step(list(loss_dict.values()))
        losses = values[:-1]
        losses_finite, norm_finite, asked = torch.stack([torch.isfinite(losses).all(), torch.isfinite(norm),
                                                         values[-1]]).tolist()
        stop_if_asked(asked)
        if not losses_finite:
            stop_if_non_finite(dict(zip(loss_dict, losses.tolist())))
        if norm_finite:  # finite gradients: what scaler.step would check (found_inf) without another read-back
            self.optimizer_g.step()
        else:
            self.skipped_steps += 1
            self.optimizer_g.zero_grad()
            get_root_logger().warning(
                f'iteration {current_iter}: the gradient norm is {float(norm)}; step skipped ({self.skipped_steps} so '
                'far)' + (': the fp16 GradScaler lowers its scale, a few such steps at the start are normal'
                          if self.scaler.is_enabled() else ''))
        self.scaler.update()
        self.log_dict = OrderedDict(zip(loss_dict, losses))
        if norm_finite:  # a skipped step is no reason to stop
            self.log_dict['grad_norm'] = norm.detach()
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def get_current_log(self):
        """``log_dict`` as floats, read back in one go (BasicSR asks at ``print_freq``)."""
        return OrderedDict(zip(self.log_dict, torch.stack(list(self.log_dict.values())).tolist()))

    def test_autocast(self):
        """Autocast for validation and testing under ``val.amp``: ``train.amp``'s dtype, else ``INFERENCE_AMP``'s."""
        return inference_autocast(self.device.type, bool((self.opt.get('val') or {}).get('amp')),
                                  AMP_DTYPES.get((self.opt.get('train') or {}).get('amp')))

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the GradScaler's (fp16), saved by rank 0 (BasicSR's is ``@master_only``
        too) through ``base_model.torch`` (the ``basicsr`` command makes that save atomic)."""
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
