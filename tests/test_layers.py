"""The layers of the code (``.importlinter``: tools -> data preparation -> BasicSR integration -> components ->
utils -> arch) hold, and no module imports itself back through others: a cycle or an upward import fails CI."""
import os

import grimp
from importlinter.cli import lint_imports

from conftest import REPO

PACKAGES = ('mdrn_cli', 'mdrn_models', 'mdrn_arch', 'datasets_prep')


def test_layer_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(REPO)
    assert lint_imports(config_filename=os.path.join(REPO, '.importlinter')) == 0  # its report names the import


def test_no_import_cycle_among_the_projects_modules():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.append(' -> '.join((module, *back)))
    assert not cycles, '\n'.join(cycles)
