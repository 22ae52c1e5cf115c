"""Run by ``torchrun`` in the distributed tests: the real ``basicsr train`` pipeline, then every rank dumps its nets.

``train_pipeline`` does not return its model, so the model BasicSR builds is recorded by wrapping ``build_model``
in ``basicsr.train``'s namespace (test-only; the command itself is unchanged). Each rank appends the iterations it
started to ``OUT_DIR/iters_rank<r>.txt``. Faults fed in-process, by environment variable:

* ``DIST_TEST_NAN=R:K``: on rank R the pixel loss of iteration K is NaN (the other ranks' losses stay finite);
* ``DIST_TEST_ROOT_PER_RANK=1``: rank r runs under ``<--root>/rank<r>`` (nodes that share no filesystem);
* ``DIST_TEST_DATA_GONE=R:K``: on rank R the training data is gone once K batches were read;
* ``DIST_TEST_DISK_FULL=K``: rank 0 cannot write the files of iteration K (no space left);
* ``DIST_TEST_COMPILE_FAILS=R``: ``train.compile`` traces with aot_eager, and on rank R the compiled forward raises.

Usage: torchrun ... dist_worker.py OUT_DIR train -opt X.yml --launcher pytorch --root DIR
"""
import os
import sys

import mdrn_arch.basicsr_compat  # noqa: F401

import basicsr.train  # noqa: E402
import torch  # noqa: E402

import mdrn_cli as cli  # noqa: E402

RANK = int(os.environ['RANK'])
out_dir, argv = sys.argv[1], sys.argv[2:]  # cli.main rewrites sys.argv for BasicSR's parser
if os.environ.get('DIST_TEST_ROOT_PER_RANK'):
    i = argv.index('--root') + 1
    argv[i] = os.path.join(argv[i], f'rank{RANK}')
    os.makedirs(argv[i], exist_ok=True)
nan_rank, nan_iter = map(int, os.environ.get('DIST_TEST_NAN', '-1:-1').split(':'))
gone_rank, gone_after = map(int, os.environ.get('DIST_TEST_DATA_GONE', '-1:-1').split(':'))
full_iter = os.environ.get('DIST_TEST_DISK_FULL')

if RANK == gone_rank:
    from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset, TrainingDataUnreadable
    _getitem, reads = AWGNDenoisingDataset.__getitem__, []

    def getitem(self, index):
        if self.opt.get('phase') == 'train':
            reads.append(index)
            if len(reads) > gone_after * self.opt['batch_size_per_gpu']:
                raise TrainingDataUnreadable(f'datasets.train: the data of rank {RANK} is gone')
        return _getitem(self, index)
    AWGNDenoisingDataset.__getitem__ = getitem
if os.environ.get('DIST_TEST_COMPILE_FAILS'):
    from mdrn_models.models import training_step
    from mdrn_models.utils import compiling
    compiling.BACKEND = 'aot_eager'
    if RANK == int(os.environ['DIST_TEST_COMPILE_FAILS']):
        def fails(x):
            raise RuntimeError('inductor: no kernel for this device')
        training_step.compile_static = lambda net: fails
if full_iter:
    _open = open

    def open(path, *args, **kwargs):  # noqa: A001  (BasicSR's save opens through builtins.open)
        if f'_{full_iter}.pth.tmp' in str(path) or f'{full_iter}.state.tmp' in str(path):
            raise OSError(28, 'No space left on device')
        return _open(path, *args, **kwargs)
    import builtins
    builtins.open = open

built = []
_build_model = basicsr.train.build_model


def build_model(opt):
    model = _build_model(opt)
    update_learning_rate, pixel_loss = model.update_learning_rate, model.cri_pix
    current = [0]

    def record_iteration(current_iter, **kwargs):  # BasicSR calls it at the start of every iteration
        current[0] = current_iter
        with open(f'{out_dir}/iters_rank{RANK}.txt', 'a') as f:
            f.write(f'{current_iter}\n')
        update_learning_rate(current_iter, **kwargs)

    def cri_pix(*args, **kwargs):
        loss = pixel_loss(*args, **kwargs)
        return loss * float('nan') if (RANK, current[0]) == (nan_rank, nan_iter) else loss

    model.update_learning_rate, model.cri_pix = record_iteration, cri_pix
    built.append(model)
    return model


basicsr.train.build_model = build_model
cli.main(argv)
model = built[0]
nets = {'g': model.get_bare_model(model.net_g), 't': getattr(model, 'net_t', None),
        'adapter': getattr(model, 'net_adapter', None)}
torch.save({k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in nets.items() if net},
           f'{out_dir}/rank{torch.distributed.get_rank()}.pth')
