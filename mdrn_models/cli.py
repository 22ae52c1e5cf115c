"""The ``basicsr`` command: BasicSR's own train/test pipelines with every installed plugin registered.

    basicsr train -opt options/X.yml [--launcher none|pytorch|slurm] [--auto_resume] [--debug]
                  [--force_yml key:sub=value ...] [--root DIR]
    basicsr test  -opt options/X.yml [--root DIR]
    basicsr denoise -opt options/X.yml -i noisy.png -o denoised.png   (your own images; see mdrn_models.denoise)
    torchrun --nproc_per_node=N $(which basicsr) train -opt X.yml --launcher pytorch

``--root`` (default: the current directory) is where ``experiments/``, ``results/`` and ``tb_logger/`` live, and where
``--auto_resume`` looks for training states. All other flags are BasicSR's own and are passed through unchanged.

Plugins: besides this project, every installed distribution that declares an entry point in the group
``basicsr.plugins`` (value: a module to import, e.g. ``mypkg = mypkg.archs``) is imported before the pipeline runs,
so its archs, models, datasets and losses can be used in the same option files.
"""
import argparse
import os
import sys
from importlib.metadata import entry_points

import mdrn_arch.basicsr_compat  # noqa: F401  (before the first basicsr import)
from mdrn_models import malloc_tuning

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


def _build_parser():
    parser = argparse.ArgumentParser(
        prog='basicsr', description=__doc__.split('\n\n')[0],
        epilog='Other flags (-opt, --launcher, --auto_resume, --debug, --force_yml, --local_rank) go to BasicSR.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', choices=['train', 'test', 'denoise'],
                        help='run basicsr.train, basicsr.test, or denoise images (basicsr denoise -h)')
    parser.add_argument('--root', default=os.getcwd(),
                        help='folder holding experiments/, results/, tb_logger/ (default: current directory)')
    return parser


def _option_path(args):
    """The -opt value exactly as BasicSR's argparse will read it (abbreviations such as -o and -op included)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args(args)[0].opt


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if 'denoise' in argv[:3] and argv[0].startswith('--root'):  # else its -o/-opt would be read as train/test's
        sys.exit('basicsr denoise: error: --root is where train/test write experiments/ and results/; denoise writes '
                 'only -o: drop --root (run it where the option file\'s relative paths start)')
    if argv[:1] == ['denoise']:  # its own flags (-i/-o/--tile...), not BasicSR's
        load_plugins()
        from mdrn_models import denoise
        return denoise.main(argv[1:])
    malloc_tuning.keep_freed_memory()  # a one-job process: reuse freed feature maps (see malloc_tuning)
    ns, passthrough = _build_parser().parse_known_args(argv)
    # torch.distributed.launch passes --local-rank=N; BasicSR only knows --local_rank (pitfall #7)
    passthrough = [a.replace('--local-rank', '--local_rank', 1) if a.startswith('--local-rank') else a
                   for a in passthrough]
    opt_path = _option_path(passthrough)
    if opt_path is not None:
        try:
            check_option_file(opt_path)
        except OptionFileError as exc:
            sys.exit(f'basicsr {ns.command}: error: {exc}')

    load_plugins()
    from mdrn_models import pipeline_fixes
    pipeline_fixes.install()
    sys.argv = [f'basicsr {ns.command}', *passthrough]
    root = os.path.abspath(ns.root)
    if ns.command == 'train':
        from basicsr.train import train_pipeline
        train_pipeline(root)
    else:
        from basicsr.test import test_pipeline
        test_pipeline(root)


if __name__ == '__main__':
    main()
