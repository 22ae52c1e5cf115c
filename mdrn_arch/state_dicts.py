"""Which of this package's networks a state dict is, read from its tensor names and shapes (``network_options``), for
weights that do not say (a bare ``.pth``; ``basicsr export-weights``, ``spandrel_support``). A guess is only returned
when the network it builds has exactly the state dict's names and shapes: a near miss is refused, not loaded half.
"""
import torch

from .dncnn_arch import DnCNN
from .ffdnet_arch import FFDNet
from .mdrn_arch import MDRN

ARCHS = {'MDRN': MDRN, 'DnCNN': DnCNN, 'FFDNet': FFDNet}


def _mdrn(state):
    if 'head.weight' not in state or 'tail.weight' not in state:
        return None
    num_level = sum(1 for k in state if k.startswith('down_') and k.endswith('.weight'))
    blocks = {k.split('.')[2] for k in state if k.startswith('msag_0_0.body.')}
    branches = {k.split('.')[4] for k in state if k.startswith('msag_0_0.body.0.branches.')}
    if len(branches) != 2:  # the dilations are not in the weights: only the default (1, 2) can be assumed
        return None
    return {'type': 'MDRN', 'num_in_ch': state['head.weight'].shape[1], 'num_out_ch': state['tail.weight'].shape[0],
            'num_feat': state['head.weight'].shape[0], 'num_block': len(blocks), 'num_level': num_level}


def _plain_convs(state):
    """DnCNN or FFDNet: ``body.<i>`` convs with ReLUs between, nothing else."""
    convs = sorted(int(k.split('.')[1]) for k in state if k.startswith('body.') and k.endswith('.weight'))
    if not convs:
        return None
    first, last = state[f'body.{convs[0]}.weight'], state[f'body.{convs[-1]}.weight']
    if first.shape[1] > 1 and (first.shape[1] - 1) % 4 == 0 and last.shape[0] % 4 == 0:
        return {'type': 'FFDNet', 'num_in_ch': (first.shape[1] - 1) // 4, 'num_out_ch': last.shape[0] // 4,
                'num_feat': first.shape[0], 'num_conv': len(convs), 'sigma': 25}
    return {'type': 'DnCNN', 'num_in_ch': first.shape[1], 'num_out_ch': last.shape[0], 'num_feat': first.shape[0],
            'num_conv': len(convs)}


def unwrapped(state):
    """``state`` with the ``module.`` prefix that DataParallel/DDP add to every name removed."""
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}


def network_options(state):
    """``network_g`` options (``type`` and arguments) of the network ``state`` is the state dict of, or None. An
    FFDNet's noise level is not in its weights: ``sigma`` is 25 (tell it the level of your images)."""
    state = unwrapped(state)
    for guess in (_mdrn, _plain_convs):
        try:
            opt = guess(state)
            if opt is None:
                continue
            with torch.device('meta'):  # names and shapes only: no memory, no draw from the seeded RNG
                net = ARCHS[opt['type']](**{k: v for k, v in opt.items() if k != 'type'})
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # shapes no network of ours has
            continue
        own = net.state_dict()
        if own.keys() == state.keys() and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own):
            return opt
    return None
