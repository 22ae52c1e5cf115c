"""HKDModel (HADS / HMDS distillation), FeatureHooks and the x8 self-ensemble of DenoiseModel."""
import re
from copy import deepcopy

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import mdrn_models  # noqa: F401  (compat alias, registers MDRN, the dataset and the models)
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils import check_resume
from conftest import REPO
from mdrn_models.models.denoise_model import self_ensemble
from mdrn_models.models.feature_hooks import FeatureHooks

STUDENT = {'type': 'MDRN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1, 'num_level': 2}
TEACHER = {**STUDENT, 'num_block': 2}


def save_net(net_opt, path, seed=0, key='params'):
    torch.manual_seed(seed)
    net = build_network(deepcopy(net_opt))
    torch.save({key: net.state_dict()}, path)
    return str(path)


def make_opt(tmp_path, teacher_ckpt, network_g=STUDENT, network_t=TEACHER, kd_opt=None, datasets=None, **path):
    (tmp_path / 'models').mkdir(exist_ok=True)
    (tmp_path / 'states').mkdir(exist_ok=True)
    return {
        'name': 'hkd_unit', 'model_type': 'HKDModel', 'is_train': True, 'dist': False, 'num_gpu': 0, 'rank': 0,
        'world_size': 1, 'network_g': deepcopy(network_g), 'network_t': deepcopy(network_t),
        'path': {'pretrain_network_t': teacher_ckpt, 'models': str(tmp_path / 'models'),
                 'training_states': str(tmp_path / 'states'), 'resume_state': None, **path},
        'datasets': deepcopy(datasets) or {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': 16, 'sigma': 50}},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [100],
                                                                          'gamma': 0.5},
                  'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'kd_opt': deepcopy(kd_opt) if kd_opt is not None else {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 100, 'save_img': False},
    }


def batch(seed=0, n=2, size=16, sigma=50, sigma_t=None, ch=1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, ch, size, size, generator=g)
    noise = torch.randn(n, ch, size, size, generator=g)
    data = {'gt': gt, 'lq': gt + sigma / 255 * noise}
    if sigma_t is not None:
        data['lq_teacher'] = gt + sigma_t / 255 * noise
    return data


@pytest.fixture
def teacher_ckpt(tmp_path):
    return save_net(TEACHER, tmp_path / 'teacher.pth', seed=1)


def test_teacher_frozen_bit_identical_no_grad(tmp_path, teacher_ckpt):
    model = build_model(make_opt(tmp_path, teacher_ckpt))
    before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    opt_ids = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert not opt_ids & {id(p) for p in model.net_t.parameters()}
    for it in range(4):
        model.feed_data(batch(it))
        model.optimize_parameters(it + 1)
    after = model.net_t.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in model.net_t.parameters())
    assert not model.net_t.training and type(model.net_t).__name__ == 'MDRN'  # not wrapped
    assert any(not torch.equal(student_before[k], v) for k, v in model.net_g.state_dict().items())  # student trains
    assert set(model.log_dict) >= {'l_pix', 'l_kd_msag_0_1', 'l_kd_msag_0_2', 'l_kd'}
    assert len(model.hooks_s) == 0 and len(model.hooks_t) == 0  # cleared every step
    assert len(model.hooks_s.handles) == 2 and len(model.hooks_t.handles) == 2


def test_kd_zero_with_shared_weights_and_input_positive_otherwise(tmp_path):
    shared = save_net(STUDENT, tmp_path / 'shared.pth', seed=3)
    model = build_model(make_opt(tmp_path, shared, network_t=STUDENT, pretrain_network_g=shared))
    model.feed_data(batch(0))
    model.optimize_parameters(1)
    # zero up to float rounding: the frozen teacher runs MDRN's fused no-grad CPU path, the student the autograd one
    assert model.log_dict['l_kd'] < 1e-6 and model.log_dict['l_pix'] > 0
    # after one step the student has moved away from the teacher: KD well above rounding
    model.feed_data(batch(1))
    model.optimize_parameters(2)
    assert model.log_dict['l_kd'] > 1e-4

    # HMDS: same weights, but the teacher sees the lower-noise lq_teacher -> KD > 0 from the first step
    ds = {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': 16, 'sigma': 50, 'sigma_teacher': 25}}
    hmds = build_model(make_opt(tmp_path, shared, network_t=STUDENT, pretrain_network_g=shared, datasets=ds,
                                kd_opt={'teacher_input': 'lq_teacher'}))
    seen = []
    hmds.net_t.register_forward_pre_hook(lambda m, inputs: seen.append((inputs[0], torch.is_grad_enabled())))
    data = batch(0, sigma_t=25)
    hmds.feed_data(data)
    hmds.optimize_parameters(1)
    # the teacher sees the lower-noise copy, under no_grad (which also puts MDRN on its fused inference path)
    assert len(seen) == 1 and torch.equal(seen[0][0], data['lq_teacher']) and not seen[0][1]
    assert hmds.log_dict['l_kd'] > 1e-3  # well above the rounding of the same-input case (~1e-7)

    # HADS with an independent teacher: KD > 0
    other = save_net(STUDENT, tmp_path / 'other.pth', seed=4)
    hads = build_model(make_opt(tmp_path, other, network_t=STUDENT, pretrain_network_g=shared))
    hads.feed_data(batch(0))
    hads.optimize_parameters(1)
    assert hads.log_dict['l_kd'] > 0


def test_teacher_build_leaves_the_seeded_rng_alone(tmp_path, teacher_ckpt):
    """The teacher's random init (overwritten by its checkpoint) must not shift the seeded stream that the training
    noise comes from: a distillation run and its plain baseline then draw the same noisy batches."""
    opt = make_opt(tmp_path, teacher_ckpt)
    plain = {k: v for k, v in deepcopy(opt).items() if k != 'network_t'}
    plain['model_type'] = 'DenoiseModel'
    plain['train'].pop('kd_opt')
    draws = []
    for o in (opt, plain):
        torch.manual_seed(0)
        build_model(o)
        draws.append(torch.randn(8))
    assert torch.equal(*draws)


def test_kd_gradients_reach_hooked_student_layers(tmp_path, teacher_ckpt):
    model = build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'layers': ['msag_0_1']}))
    model.feed_data(batch(0))
    model.optimizer_g.zero_grad()
    _, fs, ft = model.kd_features()
    kd = model.kd_losses(fs, ft)
    assert list(kd) == ['l_kd_msag_0_1']
    sum(kd.values()).backward()
    g = model.net_g
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.msag_0_1.parameters())
    assert g.head.weight.grad.abs().sum() > 0  # upstream of the tap
    # downstream of the tap (msag_0_2, tail) gets nothing from the KD loss alone
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in [*g.msag_0_2.parameters(), *g.tail.parameters()])


def test_kd_loss_is_weighted_l1_of_the_taps_and_its_gradient_reaches_the_student(tmp_path, teacher_ckpt):
    """Eq. 3-4 by hand on copies of both nets: each l_kd_<layer> is loss_weight * mean|S(lq) - T(lq_teacher)|, and the
    student's gradient is that of l_pix + sum l_kd (no adapters: the paper's case)."""
    ds = {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': 16, 'sigma': 50, 'sigma_teacher': 25}}
    model = build_model(make_opt(tmp_path, teacher_ckpt, datasets=ds,
                                 kd_opt={'type': 'L1Loss', 'loss_weight': 0.25, 'teacher_input': 'lq_teacher'}))
    taps = ['msag_0_1', 'msag_0_2']
    ref_g, ref_t = build_network(deepcopy(STUDENT)), build_network(deepcopy(TEACHER)).eval()
    ref_g.load_state_dict(model.net_g.state_dict())
    ref_t.load_state_dict(torch.load(teacher_ckpt, weights_only=True)['params'])
    hs, ht = FeatureHooks(ref_g, taps), FeatureHooks(ref_t, taps)
    data = batch(0, sigma_t=25)
    with hs.capturing():
        out = ref_g(data['lq'])
    with torch.no_grad(), ht.capturing():
        ref_t(data['lq_teacher'])
    fs, ft = hs.pop(), ht.pop()
    kd = {n: 0.25 * (fs[n] - ft[n]).abs().mean() for n in taps}
    ((out - data['gt']).abs().mean() + sum(kd.values())).backward()

    model.optimizer_g.step = lambda *args, **kwargs: None  # keep the gradients of the step
    model.feed_data(data)
    model.optimize_parameters(1)
    for n in taps:
        assert abs(model.log_dict[f'l_kd_{n}'] - kd[n].item()) < 1e-6
    for (name, p), q in zip(model.net_g.named_parameters(), ref_g.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_default_layers_are_paper_taps_and_pairs_mapping(tmp_path, teacher_ckpt):
    model = build_model(make_opt(tmp_path, teacher_ckpt))
    assert [(s, t) for s, t, _ in model.kd_pairs] == [('msag_0_1', 'msag_0_1'), ('msag_0_2', 'msag_0_2')]
    pairs = build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'layers': {'msag_0_1': 'msag_0_2',
                                                                             'msag_1_1': 'msag_1_0'}}))
    assert [(s, t) for s, t, _ in pairs.kd_pairs] == [('msag_0_1', 'msag_0_2'), ('msag_1_1', 'msag_1_0')]
    assert len(pairs.net_adapter) == 0


@pytest.mark.bad_input
def test_errors_before_training(tmp_path, teacher_ckpt):
    with pytest.raises(FileNotFoundError, match=r'teacher checkpoint not found: .*nope\.pth \(set path\.pretrain'):
        build_model(make_opt(tmp_path, str(tmp_path / 'nope.pth')))
    with pytest.raises(ValueError, match='set path.pretrain_network_t'):
        build_model(make_opt(tmp_path, None))
    # a teacher checkpoint of another size (num_block 2 checkpoint into a num_block 3 teacher)
    with pytest.raises(ValueError, match=r'does not fit network_t: \d+ missing keys.*num_block=3'):
        build_model(make_opt(tmp_path, teacher_ckpt, network_t={**TEACHER, 'num_block': 3}))
    # ... of another width -> shape mismatch
    with pytest.raises(ValueError, match=r'shape mismatches .*num_feat=16'):
        build_model(make_opt(tmp_path, teacher_ckpt, network_t={**TEACHER, 'num_feat': 16}))
    # ... of another width, loaded non-strict: it would skip all but tail.bias and distill a random teacher
    with pytest.raises(ValueError, match=r'does not fit network_t: .*shape mismatches .*num_feat=16'):
        build_model(make_opt(tmp_path, teacher_ckpt, network_t={**TEACHER, 'num_feat': 16}, strict_load_t=False))
    # non-strict still lets a teacher checkpoint hold extra keys
    extra = tmp_path / 'extra.pth'
    torch.save({'params': {**torch.load(teacher_ckpt, weights_only=True)['params'], 'x': torch.ones(1)}}, extra)
    build_model(make_opt(tmp_path, str(extra), strict_load_t=False))
    # ... of another arch
    edsr = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 1}
    edsr_ckpt = save_net(edsr, tmp_path / 'edsr.pth')
    with pytest.raises(ValueError, match=r'does not fit network_t: .*missing keys.*unexpected keys.*type=MDRN'):
        build_model(make_opt(tmp_path, edsr_ckpt))
    # unknown layer names, in the student or in the teacher
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['msag_9_9'\] in the student.*e\.g\. head"):
        build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'layers': ['msag_9_9']}))
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['nope'\] in the teacher"):
        build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'layers': {'msag_0_1': 'nope'}}))
    # nets that pad their input to different multiples (MDRN: 2**num_level) give features of other sizes at gt_size 100;
    # the dry run must see it (it used to run at 96, where both fit)
    ds100 = {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': 100, 'sigma': 50}}
    l3 = {**TEACHER, 'num_level': 3}
    with pytest.raises(ValueError, match=r'student feature \[1, 8, 100, 100\] and teacher feature \[1, 8, 104, 104'):
        build_model(make_opt(tmp_path, save_net(l3, tmp_path / 'l3.pth'), network_t=l3, datasets=ds100))
    # HMDS without lq_teacher from the dataset
    with pytest.raises(ValueError, match='datasets.train.sigma_teacher'):
        build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'teacher_input': 'lq_teacher'}))
    with pytest.raises(ValueError, match='teacher_input must be one of'):
        build_model(make_opt(tmp_path, teacher_ckpt, kd_opt={'teacher_input': 'gt'}))
    # a lower-noise copy for the teacher, but the teacher would see lq: HADS run for an HMDS config
    hmds_data = {'train': {'type': 'AWGNDenoisingDataset', 'gt_size': 16, 'sigma': 50, 'sigma_teacher': 25}}
    with pytest.raises(ValueError, match="sigma_teacher is set .*teacher_input is 'lq': set teacher_input: lq_teach"):
        build_model(make_opt(tmp_path, teacher_ckpt, datasets=hmds_data))
    # a checkpoint weights_only=True refuses (pitfall 4): one line, no unpickling
    bad = tmp_path / 'bad.pth'
    torch.save({'params': torch.nn.Conv2d(1, 1, 1).state_dict(), 'args': np.float64(1.0).dtype}, bad)
    with pytest.raises(ValueError, match='refused to load .* with weights_only=True'):
        build_model(make_opt(tmp_path, str(bad)))


def test_hmds_batch_without_lq_teacher_raises(tmp_path, teacher_ckpt):
    ds = {'train': {'type': 'SomeOtherDataset', 'gt_size': 16}}
    model = build_model(make_opt(tmp_path, teacher_ckpt, datasets=ds, kd_opt={'teacher_input': 'lq_teacher'}))
    model.feed_data(batch(0))
    with pytest.raises(KeyError, match='no lq_teacher'):
        model.optimize_parameters(1)


def test_resume_rewrite_hint(tmp_path, teacher_ckpt):
    """Without path.ignore_resume_networks, BasicSR's check_resume points the teacher at net_t_<iter>.pth."""
    opt = make_opt(tmp_path, teacher_ckpt)
    torch.save({'params': build_network(deepcopy(STUDENT)).state_dict()}, tmp_path / 'models' / 'net_g_4.pth')
    opt['path']['resume_state'] = str(tmp_path / 'states' / '4.state')
    check_resume(opt, 4)
    with pytest.raises(FileNotFoundError, match='ignore_resume_networks'):
        build_model(opt)
    opt = make_opt(tmp_path, teacher_ckpt, ignore_resume_networks=['network_t'])
    opt['path']['resume_state'] = str(tmp_path / 'states' / '4.state')
    check_resume(opt, 4)
    assert opt['path']['pretrain_network_t'] == teacher_ckpt
    build_model(opt)


def test_adapters_for_other_widths_and_archs_train_save_load(tmp_path):
    wide = {**TEACHER, 'num_feat': 16}
    ckpt = save_net(wide, tmp_path / 'wide.pth')
    model = build_model(make_opt(tmp_path, ckpt, network_t=wide))
    assert {k: (m.in_channels, m.out_channels) for k, m in model.net_adapter.items()} == {
        'msag_0_1': (8, 16), 'msag_0_2': (8, 16)}
    opt_ids = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert {id(p) for p in model.net_adapter.parameters()} <= opt_ids
    before = {k: v.clone() for k, v in model.net_adapter.state_dict().items()}
    for it in range(2):
        model.feed_data(batch(it))
        model.optimize_parameters(it + 1)
    assert any(not torch.equal(before[k], v) for k, v in model.net_adapter.state_dict().items())
    model.save(0, 2)
    saved = torch.load(tmp_path / 'models' / 'net_g_2.pth', weights_only=True)
    assert set(saved) == {'params', 'adapters'}
    # a fresh model from that checkpoint gets the trained adapters back
    again = build_model(make_opt(tmp_path, ckpt, network_t=wide, pretrain_network_g=str(tmp_path / 'models' /
                                                                                         'net_g_2.pth')))
    assert all(torch.equal(v, again.net_adapter.state_dict()[k]) for k, v in model.net_adapter.state_dict().items())
    # fine-tuning from it with a teacher of another width: its adapters do not fit and start afresh (no traceback)
    wider = {**TEACHER, 'num_feat': 12}
    other = build_model(make_opt(tmp_path, save_net(wider, tmp_path / 'wider.pth'), network_t=wider,
                                 pretrain_network_g=str(tmp_path / 'models' / 'net_g_2.pth')))
    assert other.net_adapter['msag_0_1'].out_channels == 12

    # another registered arch as teacher (color EDSR, scale 1): pair any two modules, adapter 8 -> 12
    edsr = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 12, 'num_block': 2, 'upscale': 1}
    color = {**STUDENT, 'num_in_ch': 3, 'num_out_ch': 3}
    edsr_ckpt = save_net(edsr, tmp_path / 'edsr.pth')
    mixed = build_model(make_opt(tmp_path, edsr_ckpt, network_g=color, network_t=edsr,
                                 kd_opt={'layers': {'msag_0_2': 'body.1'}}))
    assert (mixed.net_adapter['msag_0_2'].in_channels, mixed.net_adapter['msag_0_2'].out_channels) == (8, 12)
    with pytest.raises(ValueError, match='teacher takes 3 input channels and the student 1'):
        build_model(make_opt(tmp_path, edsr_ckpt, network_t=edsr, kd_opt={'layers': {'msag_0_2': 'body.1'}}))
    mixed.feed_data(batch(0, ch=3))
    mixed.optimize_parameters(1)
    assert mixed.log_dict['l_kd_msag_0_2'] > 0
    # no default layers for a student without paper_kd_taps()
    with pytest.raises(ValueError, match='kd_opt.layers is required for network_g type EDSR'):
        build_model(make_opt(tmp_path, edsr_ckpt, network_g=edsr, network_t=edsr))


class _ListSet(torch.utils.data.Dataset):

    def __init__(self, items):
        self.items, self.opt = items, {'name': 'unit'}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_validation_captures_nothing_and_keeps_train_mode(tmp_path, teacher_ckpt):
    opt = make_opt(tmp_path, teacher_ckpt)
    opt['val'] = {'val_freq': 1, 'save_img': False, 'self_ensemble': True,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    model = build_model(opt)
    seen = []
    model.hooks_s._store = type('Spy', (dict,), {'__setitem__': lambda s, k, v: (seen.append(k),
                                                                                    dict.__setitem__(s, k, v))})()
    d = batch(0, n=1, size=12)
    items = [{'lq': d['lq'][0], 'gt': d['gt'][0], 'lq_path': 'a.png'}]
    loader = torch.utils.data.DataLoader(_ListSet(items), batch_size=1)
    model.validation(loader, 1, None, False)
    assert seen == [] and len(model.hooks_s) == 0 and len(model.hooks_t) == 0
    assert model.net_g.training and not model.net_t.training
    assert np.isfinite(model.metric_results['psnr'])
    model.feed_data(batch(1))
    model.optimize_parameters(1)
    assert seen == ['msag_0_1', 'msag_0_2']  # the spy does see training captures


def test_self_ensemble_exact():
    x = torch.rand(2, 1, 12, 20)
    assert torch.allclose(self_ensemble(nn.Identity(), x), x)
    # a net that is not equivariant: shift right by one pixel. The 8 inverse-mapped outputs are the shifts in the
    # 4 directions, twice each -> exact closed form (fails if any inverse transform is wrong).
    shift = lambda t: torch.roll(t, 1, dims=-1)  # noqa: E731
    want = (torch.roll(x, 1, -1) + torch.roll(x, -1, -1) + torch.roll(x, 1, -2) + torch.roll(x, -1, -2)) / 4
    assert torch.allclose(self_ensemble(shift, x), want)
    assert not torch.allclose(shift(x), want)
    net = build_network(deepcopy(STUDENT)).eval()
    with torch.no_grad():
        assert self_ensemble(net, x).shape == x.shape


def test_denoise_model_self_ensemble_option(tmp_path):
    opt = {'name': 'dn', 'model_type': 'DenoiseModel', 'is_train': False, 'dist': False, 'num_gpu': 0,
           'network_g': deepcopy(STUDENT), 'path': {}, 'val': {'self_ensemble': False}}
    torch.manual_seed(0)
    model = build_model(opt)
    x = torch.rand(1, 1, 12, 20)
    model.feed_data({'lq': x})
    model.test()
    plain = model.output
    model.opt['val']['self_ensemble'] = True
    model.test()
    assert model.output.shape == x.shape and not torch.allclose(plain, model.output)
    with torch.no_grad():
        assert torch.allclose(model.output, self_ensemble(model.net_g, x))


def test_feature_hooks_helper():
    net = build_network(deepcopy(STUDENT))
    hooks = FeatureHooks(net, ['msag_0_1', 'tail'])
    net(torch.rand(1, 1, 8, 8))
    assert len(hooks) == 0  # nothing stored unless capturing
    with hooks.capturing():
        net(torch.rand(1, 1, 8, 8))
    feats = hooks.pop()
    assert feats['msag_0_1'].shape == (1, 8, 8, 8) and feats['tail'].shape == (1, 1, 8, 8) and len(hooks) == 0
    with pytest.raises(RuntimeError, match='produced no output'):
        hooks.pop()
    hooks.remove()
    assert hooks.handles == [] and not net.msag_0_1._forward_hooks
    # a conv whose output MSAB's inplace ReLU overwrites after the hook ran: the stored tensor is no longer its output
    conv = FeatureHooks(net, ['msag_0_1.body.0.branches.0'])
    with conv.capturing():
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match=r"\['msag_0_1.body.0.branches.0'\] is changed in place .* module after"):
        conv.pop()
    conv.remove()
    # MSAB's ReLU module runs once per branch: only the last call would be kept
    act = FeatureHooks(net, ['msag_0_1.body.0.act'])
    with pytest.raises(RuntimeError, match=r"'msag_0_1.body.0.act' \(ReLU\) runs more than once"), act.capturing():
        net(torch.rand(1, 1, 8, 8))
    act.remove()
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['x'\]"):
        FeatureHooks(net, ['x'])


# ---------------------------------------------------------------------------------------------- end to end (CLI)
def _write_pngs(folder, n=3, size=24):
    import cv2
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((size, size)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f'img{i}.png'), cv2.GaussianBlur(img, (5, 5), 1.5))


def _e2e_opt(name, gt, teacher_ckpt, network_t, total_iter):
    ds = {'type': 'AWGNDenoisingDataset', 'dataroot_gt': str(gt), 'io_backend': {'type': 'disk'}, 'channels': 1}
    return {
        'name': name, 'model_type': 'HKDModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {**ds, 'name': 'toy', 'sigma': 50, 'sigma_teacher': 25, 'gt_size': 16, 'use_hflip': True,
                      'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1},
            'val': {**ds, 'name': 'toyval', 'sigma': 50, 'noise_seed': 0, 'phase': 'val'}},
        'network_g': dict(STUDENT), 'network_t': dict(network_t),
        'path': {'pretrain_network_t': teacher_ckpt, 'param_key_t': 'params_ema', 'strict_load_t': True},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [100],
                                                                          'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1, 'ema_decay': 0.9,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'teacher_input': 'lq_teacher'}},
        'val': {'val_freq': 2, 'save_img': False, 'self_ensemble': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': True},
    }


@pytest.mark.bad_input
@pytest.mark.parametrize('edit, message', [
    (lambda o: o['datasets']['train'].pop('sigma_teacher'), 'HMDS (train.kd_opt.teacher_input: lq_teacher) needs '
                                                            'lq_teacher from the dataset'),
    (lambda o: o['network_t'].update(num_feat=32), 'teacher checkpoint'),  # of another width than network_t
    # found by the dry run of the freshly built nets, before any folder (and before the teacher's weights load)
    (lambda o: o['train']['kd_opt'].update(layers=['msag_0_9']), "unknown layer name(s) ['msag_0_9'] in the student"),
    (lambda o: o['train']['kd_opt'].update(layers={'msag_0_1': 'msag_1_0'}), 'differ in size; pick layers at the '
                                                                              'same resolution'),
    (lambda o: o['network_t'].update(num_blok=2), "network_t: MDRN has no argument 'num_blok' (did you mean "
                                                  "'num_block'?)"),
])
def test_cli_refuses_bad_distillation_options_before_any_folder(tmp_path, basicsr_cli, edit, message):
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}
    opt = _e2e_opt('hmds_bad', gt, save_net(wide, tmp_path / 'teacher.pth', key='params_ema'), wide, total_iter=2)
    edit(opt)
    yml = tmp_path / 'bad.yml'
    yml.write_text(yaml.safe_dump(opt))
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout, proc.stdout[-3000:]
    assert message in proc.stdout.strip().splitlines()[-1]
    assert not (tmp_path / 'experiments').exists()


def test_e2e_hmds_train_then_auto_resume_keeps_adapters(tmp_path, basicsr_cli):
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}  # wider teacher -> adapters on every pair
    ckpt = save_net(wide, tmp_path / 'teacher.pth', key='params_ema')
    yml = tmp_path / 'hmds.yml'
    yml.write_text(yaml.safe_dump(_e2e_opt('hmds_e2e', gt, ckpt, wide, total_iter=2)))
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    assert re.search(r'l_pix: \S+ l_kd_msag_0_1: \S+ l_kd_msag_0_2: \S+ l_kd: ', out), out[-3000:]
    models = tmp_path / 'experiments' / 'hmds_e2e' / 'models'
    first = torch.load(models / 'net_g_2.pth', weights_only=True)
    assert set(first) == {'params', 'params_ema', 'adapters'}
    assert (tmp_path / 'tb_logger' / 'hmds_e2e').is_dir()

    # resume to iter 4: the teacher still comes from pretrain_network_t (no net_t_2.pth is looked for), the
    # adapters come back from net_g_2.pth, and training goes on from iter 2.
    yml.write_text(yaml.safe_dump(_e2e_opt('hmds_e2e', gt, ckpt, wide, total_iter=4)))
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--auto_resume', cwd=tmp_path).stdout
    assert 'Resuming training from epoch' in out and 'iter: 2.' in out, out[-3000:]
    probe = re.search(r'KD probe \(2 fixed training crops\): msag_0_1: loss (\S+), cosine (\S+), cka (\S+); .*'
                      r'all: kd_over_pixel (\S+)', out)
    assert probe and all(np.isfinite(float(v.rstrip(';'))) for v in probe.groups()), out[-3000:]
    assert -1 <= float(probe.group(2).rstrip(',')) <= 1 and 0 <= float(probe.group(3).rstrip(';')) <= 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / 'tb_logger' / 'hmds_e2e')).Reload()
    assert {'kd/msag_0_1/cosine', 'kd/msag_0_2/cka', 'kd/all/kd_over_pixel'} <= set(events.Tags()['scalars'])
    assert 'net_t_2' not in out and f'loaded from {ckpt}' in out
    assert re.search(r'KD adapters loaded from \S*net_g_2\.pth', out), out[-3000:]
    second = torch.load(models / 'net_g_4.pth', weights_only=True)
    assert any(not torch.equal(first['adapters'][k], v) for k, v in second['adapters'].items())
    assert not list(models.glob('net_t_*'))


@pytest.mark.bad_input
def test_preflight_refuses_hmds_on_a_dataset_without_lq_teacher(tmp_path):
    """HMDS on a dataset that gives no lq_teacher (e.g. pre-noised pairs) is refused before any folder, not at the
    first training step with a traceback."""
    from mdrn_models.integration.option_checks import OptionError
    from mdrn_models.integration.preflight import check_datasets
    _write_pngs(tmp_path / 'gt')
    _write_pngs(tmp_path / 'lq')
    paired = {'type': 'PairedImageDataset', 'name': 'p', 'dataroot_gt': str(tmp_path / 'gt'), 'phase': 'train',
              'dataroot_lq': str(tmp_path / 'lq'), 'io_backend': {'type': 'disk'}, 'gt_size': 16, 'scale': 1,
              'batch_size_per_gpu': 1, 'dataset_enlarge_ratio': 1, 'use_hflip': False, 'use_rot': False}
    opt = {'datasets': {'train': paired}, 'train': {'kd_opt': {'teacher_input': 'lq_teacher'}}}
    with pytest.raises(OptionError, match='PairedImageDataset gives no lq_teacher'):
        check_datasets(opt)
    opt['train']['kd_opt']['teacher_input'] = 'lq'
    check_datasets(opt)


@pytest.mark.bad_input
def test_e2e_missing_teacher_fails_before_training(tmp_path, basicsr_cli):
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    yml = tmp_path / 'bad.yml'
    yml.write_text(yaml.safe_dump(_e2e_opt('bad', gt, str(tmp_path / 'missing.pth'), TEACHER, total_iter=2)))
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert 'teacher checkpoint not found' in proc.stdout and 'Start training' not in proc.stdout


@pytest.mark.parametrize('name', ['train_mdrn_hads.yml', 'train_mdrn_hmds.yml'])
def test_paper_option_files_build_the_paper_setups(name, tmp_path):
    """The paper option files build an HKDModel (with a random teacher checkpoint of the right architecture)."""
    opt = yaml.safe_load((REPO / 'options' / name).read_text())
    g, t, ds = opt['network_g'], opt['network_t'], opt['datasets']['train']
    if 'hads' in name:  # big teacher -> MDRN-2B, same sigma, same input
        assert (t['num_block'], g['num_block'], ds['channels'], ds['sigma']) == (8, 2, 1, 50)
        assert 'sigma_teacher' not in ds and opt['train']['kd_opt']['teacher_input'] == 'lq'
    else:  # same architecture, color sigma_t 50 -> sigma 70
        assert g == t and (ds['channels'], ds['sigma'], ds['sigma_teacher']) == (3, 70, 50)
        assert opt['train']['kd_opt']['teacher_input'] == 'lq_teacher'
    assert opt['train']['kd_opt']['layers'] == ['msag_0_1', 'msag_0_2', 'msag_0_3']
    ckpt = save_net(t, tmp_path / 'teacher.pth')
    built = make_opt(tmp_path, ckpt, network_g=g, network_t=t, kd_opt=opt['train']['kd_opt'], datasets=opt['datasets'])
    built['train'].update({k: opt['train'][k] for k in ('optim_g', 'scheduler', 'pixel_opt', 'ema_decay')})
    built['datasets']['train']['gt_size'] = 16  # keeps the dry run of the 2.4M-parameter nets quick
    model = build_model(built)
    assert [s for s, _, _ in model.kd_pairs] == ['msag_0_1', 'msag_0_2', 'msag_0_3'] and not len(model.net_adapter)


def test_demo_option_files_chain():
    """The demo files form the paper's story at toy scale: teachers -> plain / HADS / HMDS students at sigma 70."""
    load = lambda n: yaml.safe_load((REPO / 'options' / f'{n}.yml').read_text())  # noqa: E731
    big, small = load('demo_teacher_big_gray_s70'), load('demo_teacher_gray_s50')
    base, hads, hmds = load('demo_student_gray_s70'), load('demo_hads_gray_s70'), load('demo_hmds_gray_s50to70')
    test = load('demo_test_gray_s70')
    for o in (big, small, base, hads, hmds):
        assert o['datasets']['train']['dataroot_gt'] == 'datasets/demo/train'
        assert o['datasets']['train']['sigma'] == o['datasets']['val']['sigma']
    assert hads['network_t'] == big['network_g'] and hmds['network_t'] == small['network_g']
    assert base['network_g'] == hads['network_g'] == hmds['network_g'] == small['network_g'] == test['network_g']
    assert big['network_g']['num_block'] > base['network_g']['num_block']
    assert hads['path']['pretrain_network_t'] == f"experiments/{big['name']}/models/net_g_latest.pth"
    assert hmds['path']['pretrain_network_t'] == f"experiments/{small['name']}/models/net_g_latest.pth"
    assert small['datasets']['train']['sigma'] == hmds['datasets']['train']['sigma_teacher'] == 50
    assert hmds['train']['kd_opt']['teacher_input'] == 'lq_teacher' and hads['train']['kd_opt']['teacher_input'] == 'lq'
    assert {o['datasets']['train']['sigma'] for o in (big, base, hads, hmds)} == {70}
    assert test['datasets']['test_1']['sigma'] == 70
    same = ('total_iter', 'scheduler', 'optim_g')
    assert all(base['train'][k] == hads['train'][k] == hmds['train'][k] for k in same)
    assert base['manual_seed'] == hads['manual_seed'] == hmds['manual_seed']



@pytest.mark.bad_input
def test_data_parallel_is_refused_in_one_line_pointing_to_torchrun(tmp_path, teacher_ckpt):
    """``num_gpu: 2`` (or ``auto`` on a 2-GPU machine) without a launcher: BasicSR would wrap the nets in
    DataParallel, whose replicas each fire the feature hooks. Refused by the model's own checks (the preflight's)."""
    from mdrn_models.models.hkd_model import HKDModel
    opt = make_opt(tmp_path, teacher_ckpt)
    opt['num_gpu'] = 2
    with pytest.raises(ValueError, match=r'num_gpu: 2 without a launcher means DataParallel.*torchrun '
                                         r'--nproc_per_node=2'):
        HKDModel.check_kd_options(opt)
    opt['dist'] = True  # one process per GPU (DDP): fine
    HKDModel.check_kd_options(opt)


def test_data_parallel_batch_change_is_logged(monkeypatch, basicsr_log):
    """A plain DenoiseModel under DataParallel trains on num_gpu x batch_size_per_gpu images a step: said in the log."""
    from types import SimpleNamespace
    from mdrn_models.integration import basicsr_fixes
    monkeypatch.setattr(basicsr_fixes, 'DataParallel', lambda net: SimpleNamespace(module=net))
    fake = SimpleNamespace(opt={'dist': False, 'num_gpu': 2}, device=torch.device('cpu'))
    basicsr_fixes.model_to_device(fake, nn.Conv2d(1, 1, 1))
    assert 'Conv2d runs under DataParallel on 2 GPUs: BasicSR loads 2 x batch_size_per_gpu' in basicsr_log.text


def test_output_level_distillation_between_two_archs(tmp_path):
    """``layers: {'': ''}`` distils the teacher's output (the first thing a KD user tries), here a DnCNN teacher's
    into an MDRN student, next to feature taps mapped across the archs (widths differ: adapters)."""
    dncnn = {'type': 'DnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_conv': 5}
    ckpt = save_net(dncnn, tmp_path / 'dncnn.pth', seed=2)
    model = build_model(make_opt(tmp_path, ckpt, network_t=dncnn,
                                 kd_opt={'type': 'L1Loss', 'loss_weight': 0.5, 'layers': {'': '', 'msag_0_1': 'body.3'}}))
    assert [key for _, _, key in model.kd_pairs] == ['output', 'msag_0_1'] and 'output' not in model.net_adapter
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    data = batch(0)
    model.feed_data(data)
    model.optimize_parameters(1)
    assert {'l_kd_output', 'l_kd_msag_0_1'} <= set(model.log_dict)
    assert any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())
    probe = model.kd_probe()
    assert set(probe) == {'output', 'msag_0_1', 'all'} and 0 <= probe['output']['cka'] <= 1 + 1e-9


def test_output_level_loss_is_the_weighted_l1_of_the_outputs(tmp_path):
    ckpt = save_net(TEACHER, tmp_path / 't.pth', seed=1)
    model = build_model(make_opt(tmp_path, ckpt, kd_opt={'type': 'L1Loss', 'loss_weight': 0.25, 'layers': {'': ''}}))
    model.feed_data(batch(1))
    output, feats_s, feats_t = model.kd_features()
    with torch.no_grad():
        expected = 0.25 * (model.net_g(model.lq) - model.net_t(model.lq)).abs().mean()
    assert torch.allclose(model.kd_losses(feats_s, feats_t)['l_kd_output'], expected, atol=1e-6)
    assert torch.equal(feats_s[''], output)


def test_similarities_have_their_known_values():
    from mdrn_models.models.kd_similarity import cosine, linear_cka
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 5, generator=g)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0].float()
    rotated = torch.einsum('dc,nchw->ndhw', rotation, x) * 3.0
    assert cosine(x, x) == pytest.approx(1) and cosine(x, -x) == pytest.approx(-1)
    assert linear_cka(x, x) == pytest.approx(1) and linear_cka(x, rotated) == pytest.approx(1)
    assert linear_cka(x, torch.randn(2, 3, 5, 5, generator=g)) < 0.2  # unrelated, and of another width
