"""Option files as the ``basicsr`` command and the tools read them: plain YAML only, checked before BasicSR parses
them with its unsafe loader."""
import os


class OptionFileError(ValueError):
    """An option file that does not exist or is not plain YAML."""


def check_option_file(path):
    """Refuse a missing option file, and any YAML that BasicSR's unsafe loader would turn into code (python tags).

    BasicSR 1.4.2 parses option files with PyYAML's full ``Loader``, so ``!!python/object/apply:os.system [...]``
    in an option file runs a command. YAML's safe loader accepts everything a real option file contains and raises
    on such tags, so parsing with it first is the whole check. A key given twice in one mapping (``sigma: 50`` then
    ``sigma: 15``), which YAML loaders silently resolve to the last, is refused with both lines.
    """
    import yaml
    if not os.path.isfile(path):
        raise OptionFileError(f'option file not found: {path} (pass an existing YAML file to -opt)')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.load(f, Loader=_unique_key_loader(path))
    except UnicodeDecodeError as exc:
        raise OptionFileError(f'{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8') from None
    except OSError as exc:
        raise OptionFileError(f'cannot read {path}: {exc.strerror}') from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise OptionFileError(f'{path}:{mark.line + 1}: refused YAML tag ({exc.problem}); option files may only '
                              'hold plain data, remove the tag') from None
    except yaml.YAMLError as exc:
        raise OptionFileError(f'{path} is not valid YAML: {" ".join(str(exc).split())}') from None
    if not isinstance(opt, dict):
        raise OptionFileError(f'{path} must hold a YAML mapping of options, got {type(opt).__name__}')
    return opt


def _unique_key_loader(path):
    """YAML's safe loader, refusing a mapping that holds a key twice."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen and key != '<<':
                    raise OptionFileError(f"{path}:{key_node.start_mark.line + 1}: key '{key}' is given twice (first "
                                          f'on line {seen[key] + 1}); YAML would keep the last silently: keep one')
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)
    return UniqueKeyLoader
