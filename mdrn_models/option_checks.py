"""Checks of a parsed option dict that BasicSR does not make, run before any data is read or any net is built.

Each failure is one line naming the key and the fix. Unknown top-level keys are only refused when they look like a
typo of a known key (other plugins may add keys of their own).
"""
import difflib
import itertools

KNOWN_TOP_LEVEL = {
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val', 'logger',
    'dist_params', 'find_unused_parameters', 'use_static_graph', 'is_train', 'dist', 'rank', 'world_size',
    'auto_resume', 'root_path',
}


class OptionError(ValueError):
    """An option that cannot work; the message says which and how to fix it."""


def did_you_mean(word, options, cutoff=0.6):
    """``"did you mean 'x'?"`` for the closest of ``options`` to ``word``, or None."""
    same_but_case = [o for o in sorted(options) if str(o).lower() == str(word).lower()]  # difflib ranks 'Adam' first
    close = same_but_case or difflib.get_close_matches(str(word), sorted(options), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else None


def first_line(error, text=None):
    """The first line of ``text`` (default: ``str(error)``), or the error's class name when it is empty: the detail
    a one-line message quotes from an exception."""
    lines = str(error if text is None else text).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def first_repeat(values):
    """The first value of ``values`` that an earlier one repeats, or None."""
    return next((v for i, v in enumerate(values) if v in values[:i]), None)


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
