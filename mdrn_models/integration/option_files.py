"""Option files as the ``basicsr`` command and the tools read them: plain YAML only, checked before BasicSR parses
them with its unsafe loader (docs/robustness.md lists what is refused)."""
import os


class OptionFileError(ValueError):
    """An option file that does not exist or is not plain YAML."""


MAX_BYTES = 1 << 20  # an option file is a few kB of settings
MAX_VALUES = 100_000  # values after YAML's aliases are expanded; the project's largest file holds a few hundred


def check_option_file(path):
    """The option file read with YAML's safe loader, or a one-line ``OptionFileError``.

    BasicSR 1.4.2 parses option files with PyYAML's full ``Loader``, so ``!!python/object/apply:os.system [...]``
    runs a command; the safe loader raises on such tags and accepts everything a real option file holds. Also
    refused: a key given twice (YAML keeps the last silently), and a file past ``MAX_BYTES`` or ``MAX_VALUES`` (nine
    aliases of nine aliases of ... make a few hundred bytes mean billions of values, which BasicSR prints and copies).
    """
    import yaml
    if not os.path.isfile(path):
        raise OptionFileError(f'option file not found: {path} (pass an existing YAML file to -opt)')
    try:
        with open(path, 'rb') as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise OptionFileError(f'{path} is larger than {MAX_BYTES >> 20} MiB; an option file holds settings (a few '
                                  'kB): pass the option file, not a data file')
        loader = _unique_key_loader(path)(raw.decode('utf-8'))
        try:
            node = loader.get_single_node()
            _check_expanded_size(node, path)
            opt = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise OptionFileError(f'{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8') \
            from None
    except OSError as exc:
        raise OptionFileError(f'cannot read {path}: {exc.strerror}') from None
    except RecursionError:
        raise OptionFileError(f'{path} nests its sections too deeply to be an option file: flatten it') from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise OptionFileError(f'{path}:{mark.line + 1}: refused YAML tag ({exc.problem}); option files may only '
                              'hold plain data, remove the tag') from None
    except yaml.YAMLError as exc:
        raise OptionFileError(f'{path} is not valid YAML: {" ".join(str(exc).split())}') from None
    if not isinstance(opt, dict):
        raise OptionFileError(f'{path} must hold a YAML mapping of options, got {type(opt).__name__}')
    return opt


def _check_expanded_size(root, path):
    """Count the values under ``root`` as if every alias were written out (each node counted once per use, from a
    memo: linear in the file), refusing more than ``MAX_VALUES`` and an alias used inside itself."""
    import yaml
    sizes, open_nodes = {}, set()

    def size(node):
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise OptionFileError(f'{path}:{node.start_mark.line + 1}: a YAML alias refers to a section that holds '
                                  'it (it never ends): write the values out')
        open_nodes.add(id(node))
        children = ([part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else
                    node.value if isinstance(node, yaml.SequenceNode) else [])
        total = 1 + sum(size(child) for child in children)
        if total > MAX_VALUES:
            raise OptionFileError(f'{path} expands to more than {MAX_VALUES} values (YAML aliases *name repeat what '
                                  'an anchor &name holds): an option file holds a few hundred; write the values out')
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total
    if root is not None:
        size(root)


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


_option_trees = {}  # option file path -> what check_option_file read: one read for every check of one command


def option_tree(path):
    """:func:`check_option_file` of ``path``, read once per command (``pipeline_fixes.install`` forgets it); callers
    must not change it."""
    if path not in _option_trees:
        _option_trees[path] = check_option_file(path)
    return _option_trees[path]


def forget_option_trees():
    """A new command in this process (the tests run several): read the option files again."""
    _option_trees.clear()
