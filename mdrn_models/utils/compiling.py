"""``torch.compile`` as this project uses it, in one place (training and the benchmark)."""
import torch

BACKEND = 'inductor'  # the tests count graphs with 'aot_eager' (the same Dynamo trace, no code generation)


def compile_static(net):
    """``net`` compiled with static shapes. A training run has one crop size and a benchmark row one image size;
    with ``dynamic`` left to torch, the second size would recompile with symbolic sizes, on which inductor fails
    for MDRN's input padding, and time another graph."""
    return torch.compile(net, dynamic=False, backend=BACKEND)
