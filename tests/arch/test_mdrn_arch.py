"""MDRN architecture: the paper's parameter counts, any input size, feature taps, gradients, registration."""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from mdrn_arch import MDRN, disable_fused_inference, enable_fused_inference, onednn_fused
from mdrn_arch.mdrn_arch import MSAB, MSAG, channel_shuffle, pad_to_multiple

needs_bf16 = pytest.mark.skipif(not onednn_fused.supported(torch.bfloat16),
                                reason='this CPU runs no fused oneDNN bf16 convs (needs AVX512-BF16 or '
                                'AVX-NE-CONVERT); the fallback is tested by forcing the check off')


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
    assert enable_fused_inference(net)
    fused_calls.clear()  # the check enable runs calls them once
    x = torch.rand(2, channels, *size)
    x_before = x.clone()
    y_plain = net(x).detach()  # autograd on: the plain path
    assert not fused_calls
    with torch.no_grad():
        y = net(x)
    assert fused_calls and torch.equal(x, x_before)
    assert torch.allclose(y, y_plain, atol=1e-5), (y - y_plain).abs().max()
    disable_fused_inference(net)
    fused_calls.clear()
    with torch.no_grad():
        assert torch.allclose(net(x), y_plain, atol=1e-5) and not fused_calls


def test_hooks_inside_a_group_keep_the_plain_path_hooks_on_it_do_not(fused_calls):
    net = MDRN(1, 1, num_feat=8, num_block=2, num_level=1).eval()
    enable_fused_inference(net)
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


@needs_bf16
def test_bf16_autocast_runs_the_fused_path_in_bf16_fp16_keeps_the_plain_one(fused_calls):
    torch.manual_seed(0)
    net = MDRN(1, 1, num_feat=16, num_block=2, num_level=2).eval()
    enable_fused_inference(net)
    x = torch.rand(2, 1, 20, 12)
    with torch.no_grad():
        ref = net(x)
        fused_calls.clear()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = net(x)
        assert fused_calls
        disable_fused_inference(net)
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
    enable_fused_inference(net)
    x = torch.rand(2, 1, 20, 12)
    with torch.no_grad():
        ref = net(x)
        fused_calls.clear()
        torch._dynamo.reset()
        y = torch.compile(net, backend='eager', fullgraph=True)(x)
    assert not fused_calls and torch.allclose(y, ref, atol=1e-5), (y - ref).abs().max()


def test_bf16_without_cpu_support_runs_the_plain_path(fused_calls, monkeypatch):
    # An AVX2-only CPU: torch's oneDNN refuses bf16 convs with a RuntimeError. With the capability check forced off
    # the fused path must step aside under bf16 autocast, and give autocast's plain result.
    torch.manual_seed(0)
    net = MDRN(1, 1, num_feat=16, num_block=1, num_level=2).eval()
    enable_fused_inference(net)
    x = torch.rand(1, 1, 16, 12)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        disable_fused_inference(net)
        y_plain = net(x)
        enable_fused_inference(net)
        monkeypatch.setattr(onednn_fused, 'supported', lambda dtype: dtype != torch.bfloat16)
        fused_calls.clear()
        y = net(x)
    assert not fused_calls and y.dtype == y_plain.dtype and torch.equal(y, y_plain)
    with torch.no_grad():
        net(x)  # fp32 still fused
    assert fused_calls


def test_fused_path_is_off_where_the_cpu_has_no_fused_convs(monkeypatch, fused_calls):
    monkeypatch.setattr(onednn_fused, 'supported', lambda dtype: False)
    net = MDRN(1, 1, num_feat=8, num_block=1, num_level=1).eval()
    assert not enable_fused_inference(net)
    assert not any(type(m).__name__ == 'FusedMSAG' for m in net.modules())
    with torch.no_grad():
        net(torch.rand(1, 1, 8, 8))
    assert not fused_calls


def test_avx2_only_cpu_is_detected_and_runs(tmp_path):
    """oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA``: what an AVX2-only CPU such as AMD Zen 3 offers): the run-time
    check finds no bf16 fused convs, and MDRN under bf16 autocast and in fp32 runs through the fallback/fast path."""
    import subprocess
    import sys
    code = ('import torch, mdrn_arch; from mdrn_arch import MDRN, enable_fused_inference, onednn_fused\n'
            'assert not onednn_fused.supported(torch.bfloat16) and onednn_fused.supported(torch.float32)\n'
            'net = MDRN(1, 1, num_feat=8, num_block=1, num_level=1).eval(); assert enable_fused_inference(net)\n'
            'x = torch.rand(1, 1, 8, 8)\n'
            'with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16): y = net(x)\n'
            'with torch.no_grad(): z = net(x)\n'
            'assert (y.float() - z).abs().max() < 3e-2\n')
    env = {**__import__('os').environ, 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ATEN_CPU_CAPABILITY': 'avx2'}
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_importing_the_plugin_changes_no_process_setting():
    """``import mdrn_arch`` / ``mdrn_models`` must not flush denormals (a process-wide float setting) for the program
    that imports them; the ``basicsr`` command sets it itself."""
    import subprocess
    import sys
    code = ('import torch; import mdrn_arch, mdrn_models\n'
            'assert (torch.tensor([1e-39]) * 1.0).item() != 0, "denormals flushed on import"\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _conv_hooks(net, calls):
    return [m.register_forward_hook(lambda m, i, o, n=n: calls.append((n, m, i[0], o)))
            for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


@pytest.mark.parametrize('fused', [False, True])
def test_every_conv_module_is_called_once_per_forward(fused):
    """Hook-based tools (thop, ptflops, distillation taps such as ``msag_0_1.body.0.fusion``) see every conv: each
    module's hook fires once, and the MACs they add up equal ``torch.utils.flop_counter``'s conv MACs."""
    from torch.utils.flop_counter import FlopCounterMode
    net = MDRN(1, 1, num_feat=8, num_block=2, num_level=2).eval()
    if fused:
        assert enable_fused_inference(net)
    calls = []
    handles = _conv_hooks(net, calls)
    x = torch.rand(1, 1, 16, 12)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    for h in handles:
        h.remove()
    names = [n for n, *_ in calls]
    n_convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in net.modules())
    assert len(names) == len(set(names)) == n_convs
    # Conv2d: output elements x (in_ch x kh x kw); ConvTranspose2d (weight in, out, kh, kw): input elements x (out x kh x kw)
    macs = sum((o if isinstance(m, torch.nn.Conv2d) else i).numel() * m.weight[0].numel() for _, m, i, o in calls)
    conv_flops = sum(v for op, v in counter.get_flop_counts()['Global'].items() if 'conv' in str(op))
    assert macs == conv_flops // 2


@pytest.mark.parametrize('dilations', [(1, 2, 3), (1,), (2, 4)])
def test_dilations_are_an_argument(dilations):
    torch.manual_seed(0)
    net = build_network({'type': 'MDRN', 'num_feat': 12, 'num_block': 1, 'num_level': 1, 'dilations': list(dilations)})
    block = net.msag_0_0.body[0]
    assert [b.dilation[0] for b in block.branches] == list(dilations)
    assert all(b.in_channels == 12 // len(dilations) for b in block.branches)
    x = torch.rand(1, 1, 10, 9)
    y = net(x)
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    assert enable_fused_inference(net)
    with torch.no_grad():
        assert torch.allclose(net(x), y, atol=1e-5)


def test_dilations_must_divide_num_feat():
    with pytest.raises(ValueError, match=r'num_feat must be a multiple of 3 \(one group per dilation\), got 8'):
        MDRN(num_feat=8, dilations=(1, 2, 3))


def test_fast_path_steps_aside_when_the_network_changes(monkeypatch, basicsr_log, fused_calls):
    """A researcher who edits MSAB gets the edited network, not the stale fast path: the check run when the fast
    path is enabled finds the difference, logs one line, and leaves the plain forward on."""
    def edited(self, x):  # e.g. a ReLU added after the fusion conv
        groups = self.conv_in(x).chunk(len(self.branches), dim=1)
        y = torch.cat([self.act(conv(g)) for conv, g in zip(self.branches, groups)], dim=1)
        return x + torch.relu(self.fusion(channel_shuffle(y, len(self.branches))))
    monkeypatch.setattr(MSAB, 'forward', edited)
    torch.manual_seed(0)
    net = MDRN(1, 1, num_feat=8, num_block=1, num_level=1).eval()
    assert not enable_fused_inference(net)
    assert 'MDRN fast path off: the fused forward differs from MSAG.forward' in basicsr_log.text
    fused_calls.clear()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        y = net(x)
    assert not fused_calls
    assert torch.allclose(y, net(x).detach())

    class MyMSAB(MSAB):
        pass
    net = MDRN(1, 1, num_feat=8, num_block=1, num_level=1)
    net.msag_0_0.body[0].__class__ = MyMSAB
    assert not enable_fused_inference(net)
    assert 'MyMSAB in MSAG.body is not the MSAB the fast path implements' in basicsr_log.text


def _reference_msab(msab, x):
    halves = msab.conv_in(x).chunk(len(msab.branches), dim=1)
    y = torch.cat([msab.act(conv(h)) for conv, h in zip(msab.branches, halves)], dim=1)
    return x + msab.fusion(channel_shuffle(y, len(msab.branches)))


class ReferenceMDRN(torch.nn.Module):
    """The test oracle: an MDRN run through the straightforward forward (NCHW, ``chunk``, ``cat`` + explicit channel
    shuffle), the paper's graph written out without any speed work; same weights, same output."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        net = self.net
        h, w = x.shape[-2:]
        x_pad = pad_to_multiple(x, 2**net.num_level)

        def msag(name, *inputs):
            g = getattr(net, name)
            z = g.fusion(torch.cat(inputs, dim=1))
            y = z
            for blk in g.body:
                y = _reference_msab(blk, y)
            return z + y

        nodes = {(0, 0): msag('msag_0_0', net.head(x_pad))}
        for k in range(1, net.num_level + 1):
            nodes[k, 0] = msag(f'msag_{k}_0', getattr(net, f'down_{k}')(nodes[k - 1, 0]))
            for j in range(1, k + 1):
                i = k - j
                up = getattr(net, f'up_{i}_{j}')(nodes[i + 1, j - 1])
                nodes[i, j] = msag(f'msag_{i}_{j}', *(nodes[i, c] for c in range(j)), up)
        out = net.tail(nodes[0, net.num_level])[..., :h, :w]
        return out + x if net.residual else out


@pytest.mark.parametrize('channels, num_block, size', [(1, 2, (17, 23)), (3, 1, (40, 9)), (1, 1, (3, 5))])
def test_fast_mdrn_equals_reference_forward_and_gradients(channels, num_block, size):
    torch.manual_seed(0)
    net = MDRN(channels, channels, num_feat=16, num_block=num_block, num_level=3)
    ref = ReferenceMDRN(net)
    x = torch.rand(2, channels, *size)
    y, y_ref = net(x), ref(x)
    assert y.is_contiguous() and torch.allclose(y, y_ref, atol=1e-5)
    grads = torch.autograd.grad(y.square().sum(), list(net.parameters()))
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(net.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())
    # a channels_last color input comes back channels_last
    xc = torch.rand(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    net3 = MDRN(3, 3, num_feat=8, num_block=1, num_level=2)
    assert net3(xc).is_contiguous(memory_format=torch.channels_last)
