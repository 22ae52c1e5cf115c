"""Forward hooks that capture named sub-modules' outputs (as timm's ``FeatureHooks``), for distillation::

    hooks = FeatureHooks(net, ['msag_0_1', 'msag_0_2'])
    with hooks.capturing():
        net(x)
    feats = hooks.pop()       # {'msag_0_1': tensor, ...}; the read empties the store
    hooks.remove()            # detach the hooks

Nothing is stored unless capturing is on, so a hooked net keeps no feature maps alive while validated or tested."""
from contextlib import contextmanager

import torch
from torch import nn


def unwrap(net):
    """The bare module under DataParallel / DistributedDataParallel."""
    return net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net


def resolve_modules(net, names, what='network'):
    """Return ``{name: module}`` for ``names`` of ``net``; unknown names raise one ``ValueError`` that lists some valid
    names (module names as ``net.named_modules()`` spells them; ``''`` is the whole network, i.e. its output)."""
    modules = dict(unwrap(net).named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        valid = [n for n in modules if n]
        tops = [n for n in valid if '.' not in n]
        hint = ', '.join((tops if len(tops) >= 3 else valid)[:12])
        raise ValueError(f'unknown layer name(s) {unknown} in the {what} ({type(unwrap(net)).__name__}); '
                         f"use module names from named_modules(), e.g. {hint}, or '' for the network's output")
    return {n: modules[n] for n in names}


class FeatureHooks:
    """Stores the output of each of ``names`` (``named_modules()`` keys of ``net``, DP/DDP looked through) while
    capturing; ``pop()`` reads and empties the store. ``what`` names the net in errors (``'student network_g'``)."""

    def __init__(self, net, names, what='network'):
        self.names = list(dict.fromkeys(names))
        self.enabled = False
        # name -> (output, its version counter at capture: None for inference tensors, which have none), so that
        # pop() can tell an output changed in place after the hook ran
        self._store = {}
        self.handles = [module.register_forward_hook(self._make_hook(name))
                        for name, module in resolve_modules(net, self.names, what).items()]

    def _make_hook(self, name):

        def hook(module, inputs, output):
            if not self.enabled:
                return
            if isinstance(output, (tuple, list)):  # take the first tensor of multi-output modules
                output = next((o for o in output if torch.is_tensor(o)), None)
            if not torch.is_tensor(output):
                raise TypeError(f'layer {name!r} ({type(module).__name__}) does not output a tensor; hook another '
                                'module')
            if name in self._store:  # a module called more than once per forward: which call is "its" output?
                raise RuntimeError(f'layer {name!r} ({type(module).__name__}) runs more than once in one forward pass '
                                   '(a shared module); hook a module that runs once')
            # under torch.compile the version counter is not traceable (a graph break in every hooked block): the
            # eager dry run before training has checked the same layers for in-place changes
            compiling = torch.compiler.is_compiling()
            self._store[name] = output, None if compiling or output.is_inference() else output._version

        return hook

    @contextmanager
    def capturing(self):
        """Enable capturing for the duration of the block (restores the previous state afterwards)."""
        previous, self.enabled = self.enabled, True
        try:
            yield self
        finally:
            self.enabled = previous

    def pop(self):
        """Return the captured ``{name: tensor}`` and empty the store. A hooked layer that did not run raises."""
        missing = [n for n in self.names if n not in self._store]
        changed = [n for n, (t, version) in self._store.items() if version not in (None, t._version)]
        out = {n: t for n, (t, _) in self._store.items()}
        self.clear()
        if missing:
            raise RuntimeError(f'hooked layer(s) {missing} produced no output in the last forward pass')
        if changed:
            raise RuntimeError(f'the output of hooked layer(s) {changed} is changed in place later in the forward pass '
                               '(e.g. by an inplace ReLU), so it is not that layer\'s output; hook the module after it')
        return out

    def clear(self):
        self._store = {}

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.clear()

    def __len__(self):
        return len(self._store)
