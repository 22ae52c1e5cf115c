"""train.amp / grad_clip / compile (mdrn_models/models/training_step.py): through ``basicsr train`` and resume on a
tiny MDRN and a tiny HKDModel, the refusals, the skip of a non-finite step, clipping, and the fp16 GradScaler state."""
import math
import os
import re
import sys

import pytest
import torch
import yaml

import mdrn_models  # noqa: F401
from basicsr.models import build_model
from mdrn_models.models import training_step
from test_hkd_model import STUDENT, TEACHER, _e2e_opt, _write_pngs, batch, make_opt, save_net

BF16 = training_step.cpu_has_native_bf16()


def _denoise_opt(opt):
    """The HMDS end-to-end options as a plain DenoiseModel run (no teacher)."""
    opt = {**opt, 'model_type': 'DenoiseModel'}
    opt.pop('network_t')
    opt['path'] = {}
    opt['train'] = {k: v for k, v in opt['train'].items() if k != 'kd_opt'}
    opt['datasets']['train'].pop('sigma_teacher')
    return opt


@pytest.mark.skipif(not BF16, reason='this CPU has no native bf16 (AVX512-BF16/AMX): train.amp bf16 is refused '
                                     'here, which test_bf16_is_refused_where_the_cpu_lacks_it checks')
@pytest.mark.parametrize('model_type', ['DenoiseModel', 'HKDModel'])
def test_bf16_and_grad_clip_train_and_resume(tmp_path, basicsr_cli, model_type):
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    ckpt = save_net(TEACHER, tmp_path / 'teacher.pth', key='params_ema')
    opt = _e2e_opt('amp_run', gt, ckpt, TEACHER, total_iter=2)
    if model_type == 'DenoiseModel':
        opt = _denoise_opt(opt)
    yml = tmp_path / 'amp.yml'
    yml.write_text(yaml.safe_dump(opt))
    flags = ['--force_yml', 'train:amp=bf16', 'train:grad_clip=0.5']
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, *flags, cwd=tmp_path).stdout
    assert 'Training step: autocast bf16, torch.compile off, grad_clip 0.5.' in out, out[-3000:]
    norms = [float(v) for v in re.findall(r'grad_norm: (\S+)', out)]
    assert len(norms) == 2 and all(math.isfinite(n) and n > 0 for n in norms), out[-3000:]
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--auto_resume', *flags[:1],
                      'train:total_iter=4', *flags[1:], cwd=tmp_path).stdout
    assert 'Resuming training from epoch' in out and 'iter:       4' in out, out[-3000:]
    state = torch.load(tmp_path / 'experiments' / 'amp_run' / 'models' / 'net_g_4.pth', weights_only=True)
    assert all(v.dtype == torch.float32 for v in state['params'].values())  # weights stay fp32 under autocast


@pytest.mark.bad_input
def test_bf16_is_refused_where_the_cpu_lacks_it(tmp_path, teacher_ckpt_path, monkeypatch):
    monkeypatch.setattr(training_step, 'cpu_has_native_bf16', lambda: False)
    opt = make_opt(tmp_path, teacher_ckpt_path)
    opt['train']['amp'] = 'bf16'
    with pytest.raises(ValueError, match=r'^train.amp: bf16 on this CPU has no native bf16 instructions .*remove '
                                         r'train.amp on this machine$'):
        training_step.check_training_step_options(opt)


@pytest.mark.bad_input
@pytest.mark.parametrize('train, message', [
    ({'amp': 'fp16'}, 'train.amp: fp16 needs a CUDA GPU'),
    ({'amp': 'float16'}, "train.amp must be bf16, fp16 or ~ (fp32), got 'float16'"),
    ({'grad_clip': 0}, 'train.grad_clip must be a positive number'),
    ({'grad_clip': 'big'}, 'train.grad_clip must be a positive number'),
    ({'compile': 'yes'}, 'train.compile must be true or false'),
])
def test_bad_training_step_options_are_one_line(train, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        training_step.check_training_step_options({'num_gpu': 0, 'train': train})


@pytest.fixture
def teacher_ckpt_path(tmp_path):
    return save_net(TEACHER, tmp_path / 'teacher.pth', seed=1)


def test_a_non_finite_gradient_skips_the_step_and_clipping_bounds_the_norm(tmp_path, teacher_ckpt_path,
                                                                           basicsr_log):
    opt = make_opt(tmp_path, teacher_ckpt_path)
    opt['train']['grad_clip'] = 1e-3
    model = build_model(opt)
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    params = [p for group in model.optimizer_g.param_groups for p in group['params'] if p.grad is not None]
    assert model.log_dict['grad_norm'] > 1e-3  # logged before clipping ...
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) <= 1e-3 * (1 + 1e-4)  # ... clipped
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    handle = model.net_g.head.weight.register_hook(lambda grad: grad * float('nan'))
    model.feed_data(batch(1))
    model.optimize_parameters(2)
    handle.remove()
    assert all(torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())
    assert model.skipped_steps == 1 and 'grad_norm' not in model.log_dict
    assert any('iteration 2: the gradient norm is nan; step skipped (1 so far)' in m for m in basicsr_log.messages)


def test_the_fp16_scaler_state_is_saved_and_resumed(tmp_path, teacher_ckpt_path):
    """The fp16 path (a GradScaler) on the CPU, where train.amp fp16 is refused: the scaler's state travels in the
    training state and comes back on resume."""
    opt = make_opt(tmp_path, teacher_ckpt_path, network_t=TEACHER)
    model = build_model(opt)
    model.scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    model.scaler.update(2.0 ** 7)  # a state a fresh scaler would not have
    model.save_training_state(0, 1)
    state = torch.load(tmp_path / 'states' / '1.state', weights_only=False)
    assert state['scaler']['scale'] == 2.0 ** 7
    resumed = build_model(make_opt(tmp_path, teacher_ckpt_path))
    resumed.scaler = torch.amp.GradScaler('cpu')
    resumed.resume_training(state)
    assert resumed.scaler.get_scale() == 2.0 ** 7


def test_compiled_training_saves_plain_names(tmp_path, teacher_ckpt_path):
    opt = make_opt(tmp_path, teacher_ckpt_path, network_g=STUDENT)
    opt['model_type'] = 'DenoiseModel'
    del opt['network_t'], opt['train']['kd_opt'], opt['path']['pretrain_network_t']
    opt['train']['compile'] = True
    model = build_model(opt)
    for it in range(2):
        model.feed_data(batch(it))
        model.optimize_parameters(it + 1)
    model.save_network(model.net_g, 'net_g', 2)
    saved = torch.load(tmp_path / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert saved.keys() == model.net_g.state_dict().keys() and not any('_orig_mod' in k for k in saved)
    assert all(torch.equal(saved[k], v) for k, v in model.net_g.state_dict().items())  # the trained weights


def test_a_compiled_forward_that_disagrees_steps_aside(tmp_path, teacher_ckpt_path, monkeypatch, basicsr_log):
    """Inductor's code is the machine's: a compiled forward whose output is not the eager network's (here: made so)
    is not trained with; one line says so and the run trains uncompiled. One that agrees is kept."""
    opt = make_opt(tmp_path, teacher_ckpt_path, network_g=STUDENT)
    opt['model_type'] = 'DenoiseModel'
    del opt['network_t'], opt['train']['kd_opt'], opt['path']['pretrain_network_t']
    opt['train']['compile'] = True
    monkeypatch.setattr(torch, 'compile', lambda net, **kw: (lambda x: net(x) * float('inf')))
    model = build_model(opt)
    assert model.train_forward is model.net_g
    assert any(re.match(r'train.compile: torch.compile of MDRN steps aside on this machine \(its output is not finite'
                        r'\); training runs uncompiled.', m) for m in basicsr_log.messages)
    monkeypatch.setattr(torch, 'compile', lambda net, **kw: (lambda x: net(x)))
    agreeing = build_model(opt)
    assert agreeing.train_forward is not agreeing.net_g


def test_a_training_step_reads_one_value_back_from_the_device(tmp_path, teacher_ckpt_path, monkeypatch):
    """On a GPU every Python read of a tensor (``.item()``, ``float()``, ``if tensor``) waits for the device. A
    distillation step with clipping and EMA reads back once: whether to stop (a non-finite loss) or skip (a
    non-finite gradient); the logged values are read at print_freq (``get_current_log``). Counted here on the CPU:
    the reads made by the project's and BasicSR's code (torch's own CPU-side bookkeeping is not a device read), and
    the batch's copies to the device, which do not wait (``non_blocking``, from pinned memory on CUDA)."""
    opt = make_opt(tmp_path, teacher_ckpt_path)
    opt['train'].update(grad_clip=0.5, ema_decay=0.9)
    model = build_model(opt)
    model.feed_data(batch(0))
    model.optimize_parameters(1)  # the first step also keeps the KD probe batch
    reads = []
    for name in ('item', 'tolist', '__float__', '__int__', '__bool__', '__index__'):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if f'{os.sep}torch{os.sep}' not in caller:
                reads.append(f'{_name} at {caller}:{sys._getframe(1).f_lineno}')
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    copies, to = [], torch.Tensor.to

    def copy(self, *args, **kwargs):  # copies to the device: a plain one waits for the GPU's queue first
        if sys._getframe(1).f_code.co_name == 'feed_data':
            copies.append(kwargs.get('non_blocking', False))
        return to(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, 'to', copy)
    model.feed_data(batch(1, sigma_t=25))
    model.optimize_parameters(2)
    assert len(reads) == 1 and reads[0].startswith('tolist at ') and 'training_step.py' in reads[0], reads
    assert copies == [True, True, True]  # lq, gt, lq_teacher
    log = model.get_current_log()
    assert all(isinstance(v, float) for v in log.values()) and set(log) >= {'l_pix', 'l_kd', 'grad_norm'}
