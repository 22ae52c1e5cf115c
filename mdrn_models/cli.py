"""The train/test half of the ``basicsr`` command (``mdrn_cli`` parses the command line and calls ``run``): BasicSR's
own train/test pipelines with every installed plugin registered, and the option-file check the tools share.

``--root`` (default: the current directory) is where ``experiments/``, ``results/`` and ``tb_logger/`` live, and where
``--auto_resume`` looks for training states. All other flags are BasicSR's own and are passed through unchanged.

Plugins: besides this project, every installed distribution that declares an entry point in the group
``basicsr.plugins`` (value: a module to import, e.g. ``mypkg = mypkg.archs``) is imported before the pipeline runs,
so its archs, models, datasets and losses can be used in the same option files.

``python -m mdrn_models.cli ...`` is the whole ``basicsr`` command (``mdrn_cli.main``).
"""
import argparse
import os
import sys
from importlib.metadata import entry_points

from mdrn_cli import main  # noqa: F401  (python -m mdrn_models.cli, and callers of cli.main)
from mdrn_models import malloc_tuning  # (the package, imported first, applied the basicsr compatibility alias)

PLUGIN_GROUP = 'basicsr.plugins'


class OptionFileError(ValueError):
    """An option file that does not exist or is not plain YAML."""


def load_plugins():
    """Import this project's plugin package and every module declared in the ``basicsr.plugins`` group."""
    import mdrn_models  # noqa: F401
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # one broken plugin must say which one it is
            raise RuntimeError(f"BasicSR plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc


def check_option_file(path):
    """Refuse a missing option file, and any YAML that BasicSR's unsafe loader would turn into code (python tags).

    BasicSR 1.4.2 parses option files with PyYAML's full ``Loader``, so ``!!python/object/apply:os.system [...]``
    in an option file runs a command. ``yaml.safe_load`` accepts everything a real option file contains and raises
    on such tags, so parsing with it first is the whole check.
    """
    import yaml
    if not os.path.isfile(path):
        raise OptionFileError(f'option file not found: {path} (pass an existing YAML file to -opt)')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise OptionFileError(f'{path}:{mark.line + 1}: refused YAML tag ({exc.problem}); option files may only '
                              'hold plain data, remove the tag') from None
    except yaml.YAMLError as exc:
        raise OptionFileError(f'{path} is not valid YAML: {" ".join(str(exc).split())}') from None
    if not isinstance(opt, dict):
        raise OptionFileError(f'{path} must hold a YAML mapping of options, got {type(opt).__name__}')
    return opt


def _option_path(args):
    """The -opt value exactly as BasicSR's argparse will read it (abbreviations such as -o and -op included)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args(args)[0].opt


def _basicsr_args(argv):
    """``argv`` without ``--root``: the command line BasicSR's own parser reads, otherwise unchanged."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--root')
    return parser.parse_known_args(argv)[1]


def run(command, argv, root):
    """``basicsr train`` / ``basicsr test`` with ``argv`` (BasicSR's flags and ``--root``, whose value is ``root``),
    as parsed by ``mdrn_cli.parsers.train_test``; ``mdrn_cli.main`` has loaded the plugins."""
    malloc_tuning.keep_freed_memory()  # a one-job process: reuse freed feature maps (see malloc_tuning)
    passthrough = _basicsr_args(argv)
    opt_path = _option_path(passthrough)
    if opt_path is not None:
        try:
            check_option_file(opt_path)
        except OptionFileError as exc:
            sys.exit(f'basicsr {command}: error: {exc}')

    from mdrn_models import pipeline_fixes
    pipeline_fixes.install()
    sys.argv = [f'basicsr {command}', *passthrough]
    root = os.path.abspath(root)
    if command == 'train':
        from basicsr.train import train_pipeline
        train_pipeline(root)
    else:
        from basicsr.test import test_pipeline
        test_pipeline(root)


if __name__ == '__main__':
    sys.exit(main())
