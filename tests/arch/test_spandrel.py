"""spandrel (the loader behind chaiNNer and ComfyUI) loads MDRN of any size, and this package's DnCNN/FFDNet layouts,
after ``mdrn_arch.spandrel_support.register()``: the shipped weights in both formats and random-size networks give
the project's own forward; near misses are not detected. Skips without spandrel (``pip install -e ".[spandrel]"``)."""
import itertools

import pytest
import torch

from conftest import REPO
from mdrn_arch import MDRN, DnCNN, FFDNet

spandrel = pytest.importorskip('spandrel', reason='spandrel is an optional extra: pip install -e ".[spandrel]"')

from mdrn_arch import spandrel_support  # noqa: E402

spandrel_support.register()
WEIGHTS = sorted((REPO / 'weights').glob('*.pth')) + sorted((REPO / 'weights').glob('*.safetensors'))


def load(state_dict, tmp_path, name='w.pth'):
    path = tmp_path / name
    torch.save({'params': state_dict}, path)
    return spandrel.ModelLoader().load_from_file(str(path))


def project_forward(path, x):
    from mdrn_models.tools.model_loading import build_model
    from mdrn_arch import disable_fused_inference
    net = build_model(str(path))[0]
    disable_fused_inference(net)  # spandrel runs the plain forward; the fused path has its own tests
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize('weight', WEIGHTS, ids=lambda p: p.name)
def test_every_shipped_weight_loads_and_runs_as_the_projects_forward(weight):
    model = spandrel.ModelLoader().load_from_file(str(weight))
    assert isinstance(model, spandrel.ImageModelDescriptor) and model.architecture.id == 'MDRN'
    assert (model.purpose, model.scale, model.input_channels, model.output_channels) == ('Restoration', 1, 1, 1)
    x = torch.rand(1, 1, 37, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, project_forward(weight, x).clamp(0, 1), atol=1e-5)  # spandrel clamps to 0..1


@pytest.mark.parametrize('channels, num_feat, num_block, num_level', [
    (1, 8, 1, 1), (3, 12, 2, 2), (1, 6, 3, 3), (3, 16, 1, 3)])
def test_mdrn_of_any_size_is_detected_with_its_options(tmp_path, channels, num_feat, num_block, num_level):
    torch.manual_seed(num_feat)
    net = MDRN(num_in_ch=channels, num_out_ch=channels, num_feat=num_feat, num_block=num_block,
               num_level=num_level).eval()
    model = load(net.state_dict(), tmp_path)
    assert model.architecture.id == 'MDRN' and model.input_channels == channels
    assert model.tags == [f'{num_feat}nf', f'{num_block}block', f'{num_level}level']
    x = torch.rand(2, channels, 19, 26, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), net(x).clamp(0, 1), atol=1e-5)  # spandrel clamps to 0..1


def test_dncnn_and_ffdnet_in_this_packages_layout_load(tmp_path):
    for net, arch_id in ((DnCNN(num_feat=8, num_conv=4), 'DnCNN (body.<i> layout)'),
                         (FFDNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4), 'FFDNet')):
        model = load(net.eval().state_dict(), tmp_path)
        assert model.architecture.id == arch_id
        x = torch.rand(1, net.num_in_ch, 21, 17)
        with torch.no_grad():
            assert torch.allclose(model(x), net(x).clamp(0, 1), atol=1e-5)  # FFDNet: told sigma 25, as built
    assert model.model.sigma == 25


@pytest.mark.bad_input
@pytest.mark.parametrize('edit', ['drop', 'extra', 'reshape', 'three_branches'])
def test_near_misses_of_mdrn_are_not_detected(tmp_path, edit):
    state = MDRN(num_feat=8, num_block=2, num_level=2).state_dict()
    if edit == 'drop':
        state.pop('tail.bias')
    elif edit == 'extra':
        state['msag_0_0.body.0.extra.weight'] = torch.zeros(1)
    elif edit == 'reshape':
        state['tail.weight'] = torch.zeros(1, 8, 5, 5)
    else:
        state = MDRN(num_feat=12, num_block=1, num_level=2, dilations=(1, 2, 3)).state_dict()
    with pytest.raises(spandrel.UnsupportedModelError):
        load(state, tmp_path)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precisions_it_states_run(dtype, tmp_path):
    net = MDRN(num_feat=8, num_block=1, num_level=2).eval()
    model = load(net.state_dict(), tmp_path)
    assert model.supports_half and model.supports_bfloat16
    model.to(dtype)
    x = torch.rand(1, 1, 16, 24)
    with torch.no_grad():
        out = model(x.to(dtype)).float()
        assert out.shape == x.shape and (out - net(x).clamp(0, 1)).abs().max() < 0.05


def test_register_is_idempotent():
    before = len(spandrel.MAIN_REGISTRY)
    spandrel_support.register()
    assert len(spandrel.MAIN_REGISTRY) == before
    assert list(itertools.islice((s.architecture.id for s in spandrel.MAIN_REGISTRY.architectures('detection')), 3)) \
        == list(spandrel_support.IDS.values())
