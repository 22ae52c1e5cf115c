"""``basicsr export-weights``: a training checkpoint as a small weight file to ship, ``{'params': state_dict}`` (fp16 by
default) or a safetensors file whose metadata header says what the network is. Usage and header keys: docs/cli.md
("Exporting a checkpoint as a weight file", "spandrel and safetensors")."""
import json
import os
import os.path as osp
import sys
from importlib import metadata

import torch

import mdrn_arch.basicsr_compat  # noqa: F401  (before the first basicsr import)
from mdrn_cli import parsers
from mdrn_models.integration.option_files import OptionFileError, check_option_file
from mdrn_arch.state_dicts import network_options
from mdrn_models.utils.checkpoints import CheckpointError, check_checkpoint

# fp16 halves the file and BasicSR's load_network casts it back to fp32, but it can move PSNR by ~0.01 dB: measure the
# exported file itself
DTYPES = {name: torch.float16 if name == 'fp16' else torch.float32 for name in parsers.WEIGHT_DTYPES}


def is_state_dict(obj):
    """A non-empty dict of tensors (what ``net.state_dict()`` gives)."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def weight_metadata(params, opt_path=None, source=''):
    """The safetensors header of a weight: what the network is (from ``opt_path``'s ``network_g``, else read from the
    tensors) and, from the option file, the noise, colour, training data and length; str -> str."""
    opt = {}
    if opt_path:
        try:
            opt = check_option_file(opt_path)
        except OptionFileError as exc:
            raise CheckpointError(str(exc)) from None
    net = opt.get('network_g') or network_options(params)
    if not isinstance(net, dict):
        raise CheckpointError('cannot tell the network from the tensors (not MDRN, DnCNN or FFDNet): pass -opt, the '
                              "option file of the run, for the safetensors header's network_g")
    datasets = opt.get('datasets') or {}
    data = datasets.get('train') or next(iter(datasets.values()), {})
    train = opt.get('train') or {}
    try:
        version = metadata.version('mdrn-basicsr')
    except metadata.PackageNotFoundError:  # run from a checkout that was not pip-installed
        version = 'unknown'
    meta = {'network_g': json.dumps(net), 'channels': 'gray' if net.get('num_in_ch', 1) == 1 else 'color',
            'sigma': data.get('sigma'), 'train_data': datasets.get('train', {}).get('name'),
            'iterations': train.get('total_iter'), 'init': (opt.get('path') or {}).get('pretrain_network_g'),
            'source': source, 'version': f'mdrn-basicsr {version}'}
    return {k: str(v) for k, v in meta.items() if v is not None}


def export(ckpt, out, key='params', dtype='fp16', force=False, fmt=None, opt_path=None):
    """Write ``ckpt[key]`` cast to ``dtype`` to ``out``: ``{'params': ...}`` (``params``: the key every test option
    file of this project reads) or a safetensors file with its metadata header; returns the number of values written."""
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
    safetensors = fmt == 'safetensors' if fmt else str(out).endswith('.safetensors')
    header = weight_metadata(params, opt_path, f'{osp.basename(ckpt)}[{key}]') if safetensors else None  # (may refuse)
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    if safetensors:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in params.items()}, out, metadata=header)
    else:
        torch.save({'params': params}, out)
    return sum(v.numel() for v in params.values())


def main(argv=None):
    args = parsers.export_weights().parse_args(argv)
    try:
        n = export(args.ckpt, args.out, args.key, args.dtype, args.force, args.format, args.opt)
    except CheckpointError as exc:
        sys.exit(f'export_weights: error: {exc}')
    print(f'{args.out}: {n:,} values ({args.dtype}) from {args.ckpt}["{args.key}"], {osp.getsize(args.out):,} bytes')
