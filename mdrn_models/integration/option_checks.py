"""Checks of a parsed option dict that BasicSR does not make, run before any data is read or any net is built.

Each failure is one line naming the key and the fix. Unknown top-level keys are only refused when they look like a
typo of a known key (other plugins may add keys of their own).
"""
import itertools

from mdrn_models.utils.messages import did_you_mean

KNOWN_TOP_LEVEL = {
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val', 'logger',
    'dist_params', 'find_unused_parameters', 'use_static_graph', 'is_train', 'dist', 'rank', 'world_size',
    'auto_resume', 'root_path',
}


class OptionError(ValueError):
    """An option that cannot work; the message says which and how to fix it."""


def check_options(opt, source='option file'):
    for key in opt:
        if key in KNOWN_TOP_LEVEL or key.startswith('network_'):
            continue
        hint = did_you_mean(key, KNOWN_TOP_LEVEL | {'network_g', 'network_t'}, cutoff=0.8)
        if hint:
            raise OptionError(f"{source}: unknown option key '{key}' ({hint})")
    for phase, dataset in (opt.get('datasets') or {}).items():
        default = dataset.get('channels') is None and dataset.get('type') == 'AWGNDenoisingDataset'
        channels = 3 if default else dataset.get('channels')  # AWGNDenoisingDataset reads color unless told
        if channels is None:
            continue
        given = ', the default' if default else ''
        kind = {1: 'gray', 3: 'color'}.get(channels, f'{channels}-channel')
        for net_key, key in itertools.product(('network_g', 'network_t'), ('num_in_ch', 'num_out_ch')):
            ch = (opt.get(net_key) or {}).get(key)
            if ch is not None and ch != channels:
                raise OptionError(f'{source}: datasets.{phase} is {kind} (channels: {channels}{given}) but {net_key} '
                                  f'has {key}: {ch}; set both to 1 (gray) or both to 3 (color)')
