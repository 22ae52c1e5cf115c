"""Option files as the ``basicsr`` command and the tools read them: plain YAML only, checked before BasicSR parses
them with its unsafe loader."""
import os


class OptionFileError(ValueError):
    """An option file that does not exist or is not plain YAML."""


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
