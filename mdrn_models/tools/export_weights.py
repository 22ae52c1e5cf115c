"""Turn a training checkpoint into a small weight file to ship: ``{'params': state_dict}`` only, fp16 by default.

    python -m mdrn_models.tools.export_weights experiments/NAME/models/net_g_latest.pth weights/NAME.pth
    python -m mdrn_models.tools.export_weights CKPT OUT --key params_ema --dtype fp32 --force

BasicSR's ``net_g_*.pth`` already holds ``params`` (and ``params_ema`` when EMA is on); shipping means picking one,
casting it (fp16 halves the file; BasicSR's ``load_network`` casts it back to the network's fp32 on load) and
storing it under ``params``, the key every ``basicsr test`` option file of this project reads. A bare state
dict (``torch.save(net.state_dict(), ...)``) is exported as it is. An existing output is refused unless ``--force``.
Measure the exported file itself (``basicsr test``): the cast can move PSNR by ~0.01 dB.
"""
import os
import os.path as osp
import sys

import torch

import mdrn_arch.basicsr_compat  # noqa: F401  (before the first basicsr import)
from mdrn_cli import parsers
from mdrn_models.utils.checkpoints import CheckpointError, check_checkpoint

DTYPES = {name: torch.float16 if name == 'fp16' else torch.float32 for name in parsers.WEIGHT_DTYPES}


def is_state_dict(obj):
    """A non-empty dict of tensors (what ``net.state_dict()`` gives)."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def export(ckpt, out, key='params', dtype='fp16', force=False):
    """Write ``{'params': ckpt[key] cast to dtype}`` to ``out``; returns the number of parameters written."""
    if osp.isdir(out):  # even with --force: torch.save cannot replace a folder
        raise CheckpointError(f'{out} is a folder: give the weight file to write, e.g. {osp.join(out, "NAME.pth")}')
    # even with --force: the checkpoint is the user's (a training checkpoint cast to fp16 in place would be lost)
    if osp.exists(out) and osp.exists(ckpt) and osp.samefile(out, ckpt):
        raise CheckpointError(f'{out} is the checkpoint being exported: give another output file')
    if osp.exists(out) and not force:
        raise CheckpointError(f'{out} exists; pass --force to overwrite it')
    if osp.isdir(ckpt):
        raise CheckpointError(f'{ckpt} is a folder: give a checkpoint file, e.g. {osp.join(ckpt, "net_g_latest.pth")}')
    state = check_checkpoint(ckpt, fix='fix the CKPT argument: a .pth written by torch.save')
    if is_state_dict(state):  # a bare state dict: it is the params itself, and there is nothing to pick with --key
        if key != 'params':
            raise CheckpointError(f'{ckpt} is a bare state dict (tensors only, no "{key}" inside): drop --key')
        state = {'params': state}
    candidates = [k for k, v in state.items() if is_state_dict(v)] if isinstance(state, dict) else []
    if key not in candidates:
        hint = (f'choose one of {", ".join(map(str, candidates))} with --key' if candidates else
                'it holds no state dict: pass a BasicSR net_g_*.pth or a torch.save(net.state_dict()) file')
        raise CheckpointError(f'{ckpt} has no "{key}" state dict; {hint}')
    params = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v) for k, v in state[key].items()}
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    torch.save({'params': params}, out)
    return sum(v.numel() for v in params.values())


def main(argv=None):
    args = parsers.export_weights().parse_args(argv)
    try:
        n = export(args.ckpt, args.out, args.key, args.dtype, args.force)
    except CheckpointError as exc:
        sys.exit(f'export_weights: error: {exc}')
    print(f'{args.out}: {n:,} values ({args.dtype}) from {args.ckpt}["{args.key}"], {osp.getsize(args.out):,} bytes')


if __name__ == '__main__':
    main()
