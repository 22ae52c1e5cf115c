"""What the benchmark measures with besides the clock: peak live tensor bytes (a CPU memory proxy) and a per-op timer
(the ``--breakdown`` table)."""
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def sync(device):
    """Wait for the device's queued work (CUDA runs asynchronously), so that a clock read after it is honest."""
    if device.type == 'cuda':
        torch.cuda.synchronize()


class PeakLiveTensors(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the mode and still alive (CPU memory proxy)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.owned = 0, 0, {}

    def _free(self, key):
        self.live -= self.owned.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == 'cpu':
                key = t.untyped_storage().data_ptr()
                if key in self.owned or key == 0:
                    continue  # a view or an in-place result of a storage already counted
                nbytes = t.untyped_storage().nbytes()
                self.owned[key] = nbytes
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key)
        return out


class OpTimer(TorchDispatchMode):
    """Wall time of every op run inside the mode, and the MACs of the convolutions, grouped by kind (kernel,
    channels, dilation/stride, fused post-op; every other op in one group). Each op is timed on its own (synchronised
    on CUDA). Conv MACs come from the op's shapes, so the fused oneDNN calls of MDRN's inference path are counted too
    (``torch.utils.flop_counter`` only knows the plain ops)."""
    # op -> positions of (input, weight, stride, dilation) and how its post-op is named
    CONVS = {'aten.convolution.default': (0, 1, 3, 5, None),
             'mkldnn._convolution_pointwise.default': (0, 1, 4, 5, 7),
             'mkldnn._convolution_pointwise.binary': (0, 2, 5, 6, '+add'),
             'mkldnn._convolution_pointwise_.binary': (1, 2, 5, 6, '+add in place')}

    def __init__(self, device):
        super().__init__()
        self.device, self.groups = device, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        sync(self.device)
        seconds = time.perf_counter() - t0
        kind, macs = self.conv_kind(str(func), args, out)
        group = self.groups.setdefault(kind, [0, 0.0, 0])
        group[0] += 1
        group[1] += seconds
        group[2] += macs
        return out

    @classmethod
    def conv_kind(cls, name, args, out):
        if name not in cls.CONVS:
            return 'other ops', 0
        i_x, i_w, i_stride, i_dil, post = cls.CONVS[name]
        x, w, stride, dilation = args[i_x], args[i_w], args[i_stride], args[i_dil]
        transposed = name == 'aten.convolution.default' and args[6]
        if isinstance(post, int):
            post = '' if args[post] == 'none' else f'+{args[post]}'
        # weight: (out, in/groups, kh, kw); transposed (in, out/groups, kh, kw). Each output (input, for a
        # transposed conv) element costs in/groups (out/groups) x kh x kw MACs.
        groups = x.shape[1] // (w.shape[0] if transposed else w.shape[1])
        c_in, c_out = (w.shape[0], w.shape[1] * groups) if transposed else (w.shape[1] * groups, w.shape[0])
        macs = (x if transposed else out).numel() * w[0].numel()
        kind = f"{w.shape[2]}×{w.shape[3]} {'deconv' if transposed else 'conv'} {c_in}→{c_out}"
        kind += ''.join(f' {tag}{v[0]}' for tag, v in (('s', stride), ('d', dilation)) if v[0] > 1)
        return kind + (f' {post}' if post else ''), macs
