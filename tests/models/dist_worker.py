"""Run by ``torchrun`` in test_distributed.py: the real ``basicsr train`` pipeline, then every rank dumps its nets.

``train_pipeline`` does not return its model, so the model BasicSR builds is recorded by wrapping ``build_model``
in ``basicsr.train``'s namespace (test-only; the command itself is unchanged).
Usage: torchrun ... dist_worker.py OUT_DIR train -opt X.yml --launcher pytorch --root DIR
"""
import sys

import mdrn_arch.basicsr_compat  # noqa: F401

import basicsr.train  # noqa: E402
import torch  # noqa: E402

from mdrn_models import cli  # noqa: E402

built = []
_build_model = basicsr.train.build_model
basicsr.train.build_model = lambda opt: built.append(_build_model(opt)) or built[-1]

out_dir, argv = sys.argv[1], sys.argv[2:]  # cli.main rewrites sys.argv for BasicSR's parser
cli.main(argv)
model = built[0]
nets = {'g': model.get_bare_model(model.net_g), 't': model.net_t, 'adapter': model.net_adapter}
torch.save({k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in nets.items()},
           f'{out_dir}/rank{torch.distributed.get_rank()}.pth')
