"""Make the installed BasicSR 1.4.2 importable on torchvision >= 0.17 (pitfall #1 in docs/robustness.md).

``basicsr/data/degradations.py`` imports ``torchvision.transforms.functional_tensor``, renamed ``_functional_tensor``
in torchvision 0.17, and every ``basicsr.*`` import runs that file: each entry point of this project imports this
module before its first basicsr import.
"""
import importlib
import sys

_OLD = 'torchvision.transforms.functional_tensor'

if _OLD not in sys.modules:
    try:
        importlib.import_module(_OLD)
    except ModuleNotFoundError:
        sys.modules[_OLD] = importlib.import_module('torchvision.transforms._functional_tensor')
