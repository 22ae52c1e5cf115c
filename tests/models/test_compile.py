"""``train.compile`` and the benchmark's compile mode, traced by Dynamo on the CPU with the ``aot_eager`` backend (the
same graphs inductor would compile, without generating code): how many graphs, how many breaks, static shapes."""
import pytest
import torch
from torch._dynamo.utils import counters

import mdrn_models  # noqa: F401
from basicsr.models import build_model
from mdrn_models.tools import benchmark
from mdrn_models.utils import compiling
from test_hkd_model import STUDENT, make_opt, save_net, batch

WIDE = {**STUDENT, 'num_feat': 16, 'num_block': 2}  # a wider teacher: the KD adapters are in the step too


@pytest.fixture
def dynamo(monkeypatch):
    """Dynamo with a fresh cache and counters, compiling with ``backend`` (default aot_eager)."""
    def use(backend='aot_eager'):
        monkeypatch.setattr(compiling, 'BACKEND', backend)
    torch._dynamo.reset()
    counters.clear()
    use()
    yield use
    torch._dynamo.reset()


def test_hkd_with_compile_trains_one_graph_without_breaks_the_one_its_check_compiled(tmp_path, dynamo):
    """The student's hooked features are captured inside the compiled graph (no break in each MSAG), and the compile
    check before training ran the graph that trains (hooks on, gradients, the training batch): the training steps
    compile nothing more."""
    opt = make_opt(tmp_path, save_net(WIDE, tmp_path / 'teacher.pth', seed=1), network_t=WIDE)
    opt['train']['compile'] = True
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    model = build_model(opt)
    assert model.train_forward is not model.net_g  # the check kept the compiled forward
    assert counters['stats']['unique_graphs'] == 1
    for it in range(2):
        model.feed_data(batch(it))
        model.optimize_parameters(it + 1)
    assert counters['stats']['unique_graphs'] == 1 and dict(counters['graph_break']) == {}
    assert set(model.log_dict) >= {'l_pix', 'l_kd', 'grad_norm'}


def test_the_compile_check_compares_the_hooked_features_too(tmp_path, dynamo, monkeypatch, basicsr_log):
    """A compiled graph whose output is right but whose hooked feature is not (what a graph without the hooks would
    never show) steps aside."""
    opt = make_opt(tmp_path, save_net(WIDE, tmp_path / 'teacher.pth', seed=1), network_t=WIDE)
    opt['train']['compile'] = True
    real = compiling.compile_static

    def wrong_feature(net):
        compiled = real(net)

        def forward(x):
            out = compiled(x)
            for name, (tensor, version) in list(model_hooks[0]._store.items()):
                model_hooks[0]._store[name] = tensor + 1, version
            return out
        return forward
    model_hooks = []
    from mdrn_models.models import hkd_model, training_step
    original_layout = hkd_model.KDLayout.__init__

    def layout(self, *args, **kwargs):
        original_layout(self, *args, **kwargs)
        model_hooks.append(self.hooks_s)
    monkeypatch.setattr(hkd_model.KDLayout, '__init__', layout)
    monkeypatch.setattr(training_step, 'compile_static', wrong_feature)
    model = build_model(opt)
    assert model.train_forward is model.net_g
    assert any("train.compile: torch.compile of MDRN steps aside on this machine (its feature 'msag_0_1' differs from "
               "the eager network's" in m for m in basicsr_log.messages), basicsr_log.messages


def test_the_benchmark_compiles_each_size_with_static_shapes(dynamo):
    """With dynamic shapes left to torch, the second size recompiled with symbolic sizes (on which inductor fails for
    MDRN's padding) and its row timed another graph than the first."""
    shapes = []

    def recording(gm, example_inputs):
        shapes.append(tuple(example_inputs[0].shape))  # the image (the weights follow it)
        assert not any(isinstance(s, torch.SymInt) for t in example_inputs if isinstance(t, torch.Tensor)
                       for s in t.shape), 'symbolic shape'
        return gm.forward
    dynamo(recording)
    fn, _ = benchmark.prepare(benchmark.build('MDRN-2B'), 'compile', torch.device('cpu'))
    for size in (16, 24, 16):
        fn(torch.rand(1, 1, size, size))
    assert shapes == [(1, 1, 16, 16), (1, 1, 24, 24)]  # one static graph per size, reused
