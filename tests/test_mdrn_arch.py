"""MDRN architecture: the paper's parameter counts, any input size, feature taps, gradients, registration."""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from mdrn_arch import MDRN
from mdrn_arch.mdrn_arch import MSAG, channel_shuffle, set_fused_inference


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('num_block, paper_count', [(8, 2.38e6), (2, 0.77e6)])
def test_parameter_count_matches_paper(num_block, paper_count):
    # Paper §4.2 / Table 3: gray, 64 features, 3 levels -> MDRN 2.38M, MDRN (2B) 770K.
    net = MDRN(num_in_ch=1, num_out_ch=1, num_feat=64, num_block=num_block, num_level=3)
    assert abs(n_params(net) - paper_count) / paper_count < 0.02, n_params(net)


def test_registered_and_built_from_yaml_dict():
    assert ARCH_REGISTRY.get('MDRN') is MDRN
    net = build_network({'type': 'MDRN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1})
    assert isinstance(net, MDRN)


def test_nested_pyramid_structure():
    net = MDRN(num_feat=8, num_block=1, num_level=3)
    msags = {name for name, m in net.named_modules() if isinstance(m, MSAG)}
    # inverted pyramid: 4 + 3 + 2 + 1 MSAGs, three learned downsamplings, six deconvs (one per node with j > 0)
    assert msags == {f'msag_{i}_{j}' for i in range(4) for j in range(4 - i)}
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 6
    # dense connection (eq. 1): MSAG-4 fuses MSAG-1..3 and the upsampled MSAG below it
    assert net.msag_0_3.fusion.in_channels == 4 * 8
    assert net.paper_kd_taps() == ['msag_0_1', 'msag_0_2', 'msag_0_3']


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('size', [(8, 8), (17, 23), (3, 5), (40, 9)])
def test_any_size_gray_and_color(channels, size):
    net = MDRN(num_in_ch=channels, num_out_ch=channels, num_feat=8, num_block=1).eval()
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_global_residual_returns_input_when_tail_is_zero():
    net = MDRN(num_feat=8, num_block=1)
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)
    x = torch.rand(1, 1, 13, 16)
    assert torch.equal(net(x), x)


def test_full_resolution_taps_have_num_feat_channels():
    net = MDRN(num_feat=8, num_block=1)
    seen = {}
    handles = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
               for name in net.paper_kd_taps()]
    net(torch.rand(1, 1, 15, 20))
    for h in handles:
        h.remove()
    assert {k: tuple(v.shape) for k, v in seen.items()} == {n: (1, 8, 16, 24) for n in net.paper_kd_taps()}


def test_every_parameter_gets_a_gradient():
    # seeded: with 4-channel branches a ReLU branch can start dead everywhere for some inits (seen for seeds 3, 5)
    torch.manual_seed(0)
    net = MDRN(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2)
    net(torch.rand(1, 3, 16, 16)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_odd_num_feat_is_rejected():
    with pytest.raises(ValueError, match='num_feat must be even'):
        MDRN(num_feat=7)


@pytest.mark.parametrize('channels', [1, 3])
def test_cpu_features_run_channels_last_for_gray_and_color(channels):
    # A 1-channel image is NCHW and channels_last at once; converting it did nothing, and every conv ran in NCHW
    # (oneDNN's slow 1x1 path). The features after the head must be channels_last; the output keeps the caller's format.
    net = MDRN(num_in_ch=channels, num_out_ch=channels, num_feat=8, num_block=1, num_level=2).eval()
    formats = []
    net.msag_0_0.register_forward_pre_hook(
        lambda m, inputs: formats.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        y = net(torch.rand(1, channels, 12, 12))
    assert formats == [True] and y.is_contiguous()


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of the oneDNN fused ops (the CPU inference fast path)."""
    from mdrn_arch import onednn_fused
    calls = []
    for name in ('conv', 'add_conv1x1'):
        real = getattr(onednn_fused, name)
        monkeypatch.setattr(onednn_fused, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize('channels, num_block, num_level, size', [(1, 2, 3, (17, 23)), (3, 1, 2, (40, 9)),
                                                                  (1, 3, 1, (8, 8))])
def test_fused_cpu_inference_equals_the_plain_forward(channels, num_block, num_level, size, fused_calls):
    # The fast path writes blocks' results into their input buffers: the Unet++ nodes that are read again later
    # (dense connections, the long skips) would be corrupted if it wrote into the wrong one. Batch 2, odd sizes.
    torch.manual_seed(0)
    net = MDRN(channels, channels, num_feat=16, num_block=num_block, num_level=num_level).eval()
    x = torch.rand(2, channels, *size)
    x_before = x.clone()
    y_plain = net(x).detach()  # autograd on: the plain path
    assert not fused_calls
    with torch.no_grad():
        y = net(x)
    assert fused_calls and torch.equal(x, x_before)
    assert torch.allclose(y, y_plain, atol=1e-5), (y - y_plain).abs().max()
    set_fused_inference(net, False)
    fused_calls.clear()
    with torch.no_grad():
        assert torch.allclose(net(x), y_plain, atol=1e-5) and not fused_calls


def test_hooks_inside_a_group_keep_the_plain_path_hooks_on_it_do_not(fused_calls):
    net = MDRN(1, 1, num_feat=8, num_block=2, num_level=1).eval()
    x = torch.rand(1, 1, 8, 8)
    seen = []
    handle = net.msag_0_1.body[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        net(x)
    handle.remove()
    assert seen == [(1, 8, 8, 8)]  # a tap inside an MSAG still fires: that MSAG ran the plain path
    # a tap on the MSAG itself (the paper's distillation features) sees the fast path's output
    net.msag_0_1.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    fused_calls.clear()
    with torch.no_grad():
        net(x)
    assert fused_calls
    net(x)  # autograd on: the plain path
    assert torch.allclose(seen[-2], seen[-1], atol=1e-5)


def test_bf16_autocast_runs_the_fused_path_in_bf16_fp16_keeps_the_plain_one(fused_calls):
    torch.manual_seed(0)
    net = MDRN(1, 1, num_feat=16, num_block=2, num_level=2).eval()
    x = torch.rand(2, 1, 20, 12)
    with torch.no_grad():
        ref = net(x)
        fused_calls.clear()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = net(x)
        assert fused_calls
        set_fused_inference(net, False)
        fused_calls.clear()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y_plain = net(x)
        assert not fused_calls
        with torch.autocast('cpu', dtype=torch.float16):
            net(x)
        assert not fused_calls  # no fused fp16 path: the plain one runs
    # bf16 rounding only: measured 7.6e-3 from fp32 and 7.8e-3 from autocast's plain path (outputs up to 1.4); the
    # conv_in halves swapped in the fused path give 0.15
    err, err_plain = (y.float() - ref).abs().max(), (y_plain.float() - ref).abs().max()
    assert y.dtype == y_plain.dtype and err < 3e-2 and err_plain < 3e-2, (err, err_plain)
    assert (y.float() - y_plain.float()).abs().max() < 3e-2


@pytest.mark.parametrize('arch', [dict(type='MDRN', num_feat=16, num_block=2), dict(type='DnCNN', num_feat=8, num_conv=3),
                                  dict(type='FFDNet', num_feat=8, num_conv=3)])
def test_torch_compile_traces_one_graph(arch, fused_calls):
    # The benchmark's compile mode and users' torch.compile: the CPU fast paths (MDRN's fused ops, the channels_last
    # switch) must step aside or trace without a graph break. backend='eager' checks the trace, not inductor's code.
    torch.manual_seed(0)
    net = build_network(arch).eval()
    x = torch.rand(2, 1, 20, 12)
    with torch.no_grad():
        ref = net(x)
        fused_calls.clear()
        torch._dynamo.reset()
        y = torch.compile(net, backend='eager', fullgraph=True)(x)
    assert not fused_calls and torch.allclose(y, ref, atol=1e-5), (y - ref).abs().max()
