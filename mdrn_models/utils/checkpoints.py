"""Network checkpoints in one place: read once per command without running code (``.safetensors`` as ``{'params':
tensors}``), the state dict BasicSR would pick, why it does not fit (one line), and ``load_weights``, the one loader
(BasicSR's ``load_network``, a distillation teacher, every tool)."""
import json
import os
import re
import struct
import zipfile
from collections import OrderedDict
from os import path as osp

import torch

from mdrn_arch.state_dicts import unwrapped
from mdrn_models.utils.distributed import read_on_rank0
from mdrn_models.utils.messages import example


class CheckpointError(ValueError):
    """A network checkpoint that is missing or holds more than tensors."""


STATE_NAME = re.compile(r'(\d+)\.state')  # BasicSR's <iter>.state; other files (40_backup.state) are not states


def training_states(folder):
    """The iterations of the training states BasicSR saved in ``folder`` (``<iter>.state``), newest first; [] when
    there is none or no folder."""
    names = os.listdir(folder) if osp.isdir(folder) else ()
    return sorted((int(m.group(1)) for n in names if (m := STATE_NAME.fullmatch(n))), reverse=True)


def check_checkpoint(path, fix='fix the path.pretrain_network_* option', what='network'):
    """Load ``path`` with ``weights_only=True`` (no code can run); one-line errors for what cannot be loaded, ending
    in ``fix`` where the path is wrong (``what``: whose checkpoint, for the message). In a distributed run rank 0
    reads it and sends it to every rank (a collective: every rank calls it at the same point), so a checkpoint the
    run wrote on rank 0's disk loads on every node."""
    return read_on_rank0(lambda: _load_checked(path, fix, what))


_kept = {}  # path -> checkpoint the checks before a model is built read, for the loads that build it (one read)


def read_checkpoint(path, fix='fix the path.pretrain_network_* option'):
    """:func:`check_checkpoint`, read once per command: a checkpoint the checks before the model build read and
    :func:`keep` is handed to the loads that build the model."""
    return _kept[path] if path in _kept else check_checkpoint(path, fix)


def keep(path, ckpt):
    """Hand ``ckpt``, read from ``path`` by a check, to the loads that build the model (dropped after:
    :func:`drop_kept`). Every rank of a distributed run must keep the same paths (call it after the collective read,
    not inside rank 0's part of it): a rank that finds ``path`` kept skips the collective read."""
    _kept[path] = ckpt
    return ckpt


def drop_kept():
    """The model is built (or a new command starts): free what :func:`read_checkpoint` kept."""
    _kept.clear()


def load_weights(net, path, strict=True, param_key='params', net_key='g', net_opt=None, ckpt=None):
    """Read (``ckpt``, else :func:`read_checkpoint`), pick the state dict as BasicSR does (:func:`select_state`),
    check that it fits (:func:`fit_problem`) and load it; non-strict skips tensors of another shape, as BasicSR's.
    Returns (the param key used, the number of the network's tensors loaded)."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    state, used = select_state(ckpt, path, param_key, net_key)
    problem = fit_problem(net, state, strict, path, net_key, net_opt)
    if problem:
        raise CheckpointError(problem)
    own = net.state_dict()
    if not strict:
        state = OrderedDict((k, v) for k, v in state.items() if k not in own or own[k].shape == v.shape)
    net.load_state_dict(state, strict=strict)
    return used, sum(k in state for k in own)


def is_safetensors(path):
    """Whether ``path`` is a safetensors file: an 8-byte little-endian header length, then a JSON header (read from
    the bytes, whatever the file is called)."""
    with open(path, 'rb') as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b'{' and 2 <= struct.unpack('<Q', head[:8])[0] <= osp.getsize(path) - 8


def safetensors_metadata(path):
    """The ``__metadata__`` of a safetensors file (``{}`` without one): str -> str, as the format stores it."""
    with open(path, 'rb') as f:
        size = struct.unpack('<Q', f.read(8))[0]
        return dict(json.loads(f.read(size)).get('__metadata__') or {})


def _load_checked(path, fix, what):
    if not osp.isfile(path):
        raise CheckpointError(f'{what} checkpoint not found: {path} ({fix})')
    with open(path, 'rb') as f:
        pickle_magic = f.read(1) == b'\x80'  # torch.save's legacy (non-zip) format is a plain pickle
    safetensors = is_safetensors(path)
    if not (zipfile.is_zipfile(path) or pickle_magic or safetensors):
        raise CheckpointError(f'{path} is not a PyTorch checkpoint (a torch.save file) nor a safetensors file: '
                              f'{fix}')
    try:
        if safetensors:
            from safetensors.torch import load_file
            ckpt = {'params': load_file(path, device='cpu')}  # tensors only: nothing in it can run
        else:
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        # torch's message opens with generic advice (with terminal colour codes); the reason is its Unpickler line
        lines = [re.sub(r'\x1b\[[0-9;]*m', '', line).strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if 'Unpickler error' in line), lines[0] if lines else type(exc).__name__)
        if safetensors:
            raise CheckpointError(f'{path} is not a readable safetensors file ({first}): {fix}') from None
        raise CheckpointError(f'refused to load {path} with weights_only=True ({first}); it holds Python objects '
                              'besides tensors. Re-save only its state dict, e.g. {"params": net.state_dict()}, '
                              'from code you trust') from None
    bad = first_non_finite(ckpt)
    if bad is not None:  # a net with NaN/Inf weights scores garbage (PSNR ~5 dB) or trains on NaN
        raise CheckpointError(f'{path} holds non-finite values (NaN or Inf) in {bad}: it is not a usable network; use '
                              'an earlier checkpoint of the run')
    return ckpt


def first_non_finite(tree, prefix=''):
    """The key path (``params/head.weight``) of the first floating-point tensor in ``tree`` (nested dicts and lists)
    holding a NaN or an Inf, or None."""
    if isinstance(tree, torch.Tensor):
        bad = tree.is_floating_point() and not torch.isfinite(tree).all()
        return (prefix or '(the tensor)') if bad else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f'{prefix}/{key}' if prefix else str(key))
        if found is not None:
            return found
    return None


def arch_desc(net_opt):
    return ', '.join(f'{k}={v}' for k, v in (net_opt or {}).items())


def role(net_key):
    return 'teacher' if net_key == 't' else f'network_{net_key}'


def select_state(ckpt, load_path, param_key, net_key='g'):
    """The state dict BasicSR's ``load_network`` would read from ``ckpt`` (``param_key``, falling back to
    ``params``; a bare state dict too; ``param_key`` None: the bare state dict only, as BasicSR reads the whole file
    then), ``module.`` prefixes stripped. Returns (state, key actually used)."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{role(net_key)} checkpoint {load_path} is a {type(ckpt).__name__}, not a dict of '
                             'weights')
    keys = () if param_key is None else (param_key, 'params')
    used = next((k for k in keys if isinstance(ckpt.get(k), dict)), None)
    if used is None and ckpt and all(hasattr(v, 'shape') for v in ckpt.values()):
        state = ckpt
    elif used is None and {'iter', 'optimizers'} <= set(ckpt):
        raise CheckpointError(f'{role(net_key)} checkpoint {load_path} is a training state (for resuming), not '
                             f'network weights: point path.pretrain_network_{net_key} at '
                             f'models/net_{net_key}_<iter>.pth, or resume with --auto_resume')
    elif used is None:
        raise CheckpointError(f'{role(net_key)} checkpoint {load_path} has no [{param_key}] weights (keys: '
                             f'{example(ckpt, 6)}); set path.param_key_{net_key}')
    else:
        state = ckpt[used]
    return OrderedDict(unwrapped(state)), used


def shape_mismatches(own, state):
    """Keys of the state dict ``own`` whose tensor in ``state`` has another shape."""
    return [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]


def fit_mismatches(net, state, strict, net_key='g'):
    """What keeps ``state`` from loading into ``net`` (missing/unexpected keys, shape mismatches; one phrase), or
    None when it loads (see :func:`fit_problem`)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if net_key == 't' and not strict:
        strict, unexpected = True, []
    shape = shape_mismatches(own, state)
    if not ((strict and (missing or unexpected or shape)) or len(shape) + len(missing) == len(own)):
        return None
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing keys ({example(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys ({example(unexpected)})')
    if shape:
        k = shape[0]
        parts.append(f'{len(shape)} shape mismatches ({k}: checkpoint {list(state[k].shape)} vs network '
                     f'{list(own[k].shape)})')
    return '; '.join(parts)


def fit_problem(net, state, strict, load_path, net_key='g', net_opt=None):
    """Why ``state`` cannot be loaded into ``net`` (one line), or None. Non-strict loads skip keys of another shape,
    as BasicSR does, but a checkpoint sharing no key of the right shape is refused either way. A teacher (``'t'``)
    must load whole: frozen tensors left at their random init would be distilled into the student, so non-strict only
    lets its checkpoint hold extra keys."""
    misfit = fit_mismatches(net, state, strict, net_key)
    if misfit is None:
        return None
    return (f'{role(net_key)} checkpoint {load_path} does not fit network_{net_key}: {misfit}; set '
            f'network_{net_key} ({arch_desc(net_opt)}) to the architecture and options the checkpoint was trained '
            f'with, or point path.pretrain_network_{net_key} at a checkpoint of this network')


def checkpoint_path(opt, net_key):
    """``path.pretrain_network_<key>`` (the ``basicsr`` command has already looked a relative one up under
    ``--root``: ``pipeline_fixes.parse_options``)."""
    return (opt.get('path') or {}).get(f'pretrain_network_{net_key}')
