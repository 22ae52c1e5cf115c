"""Make the installed BasicSR 1.4.2 importable on today's torchvision.

BasicSR 1.4.2 (the last release) does ``from torchvision.transforms.functional_tensor import rgb_to_grayscale`` in
``basicsr/data/degradations.py``; torchvision 0.17 renamed that private module to ``_functional_tensor``. Any
``basicsr.*`` import runs ``basicsr/__init__.py``, which imports that file, so the alias must exist before the *first*
basicsr import. Every entry point of this project (the ``basicsr`` command, ``mdrn_arch``, ``mdrn_models``,
``datasets_prep``, the tests) imports this module first. We alias instead of editing the installed basicsr so that a
plain ``pip install basicsr`` keeps working and nothing is vendored.
"""
import importlib
import sys

_OLD = 'torchvision.transforms.functional_tensor'

if _OLD not in sys.modules:
    try:
        importlib.import_module(_OLD)
    except ModuleNotFoundError:
        sys.modules[_OLD] = importlib.import_module('torchvision.transforms._functional_tensor')
