"""oneDNN convolutions with a ReLU or a residual add fused in (the ops inductor lowers conv+ReLU and conv+add to on the
CPU), for MDRN's CPU inference fast path (``fused_inference``). They have no autograd and are private to torch: they
run only where nothing can tell the difference (``compute_dtype``), in a dtype this CPU is found to run them in
(``supported``). In bf16 the add comes before the single rounding to bf16, where autocast rounds the conv output first.
"""
import functools

import torch

try:
    _conv = torch.ops.mkldnn._convolution_pointwise
    _conv_add_ = torch.ops.mkldnn._convolution_pointwise_
    AVAILABLE = torch.backends.mkldnn.is_available()
except (AttributeError, RuntimeError):  # a torch build without them: the plain path runs
    AVAILABLE = False

_ONE, _ZERO = [1, 1], [0, 0]


def compute_dtype(x):
    """The dtype the fused ops replacing the plain forward for ``x`` run in (fp32; bf16 under CPU autocast to bf16),
    or None where they may not replace it."""
    if not (AVAILABLE and torch.backends.mkldnn.enabled and x.device.type == 'cpu' and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export() and x.dtype in (torch.float32, torch.bfloat16)):
        return None
    if torch.is_autocast_enabled('cpu'):
        dtype = torch.bfloat16 if torch.get_autocast_dtype('cpu') == torch.bfloat16 else None
    else:
        dtype = torch.float32 if x.dtype == torch.float32 else None
    return dtype if dtype is not None and supported(dtype) else None


@functools.lru_cache(maxsize=None)
def supported(dtype):
    """Whether this CPU and torch build run the fused ops in ``dtype``: torch's own check for oneDNN bf16 (it
    refuses bf16 without AVX512-BF16 or AVX-NE-CONVERT, with a RuntimeError), then one tiny call of each op."""
    if not AVAILABLE or (dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    x, w = torch.ones(1, 2, 4, 4, dtype=dtype), torch.ones(2, 2, 1, 1)
    try:
        with torch.no_grad():
            y = conv(x, w, None, relu=True)
            add_conv1x1(y, x, w, None, inplace=True)
    except RuntimeError:
        return False
    return True


def conv(x, weight, bias, padding=0, dilation=1, relu=False):
    """``conv2d(x, weight, bias, padding=padding, dilation=dilation)`` [then ReLU] as one op (stride 1, 1 group), in
    ``x``'s dtype."""
    weight, bias = _like(x, weight, bias)
    return _conv(x, weight, bias, [padding] * 2, _ONE, [dilation] * 2, 1, 'relu' if relu else 'none', [], '')


def add_conv1x1(acc, x, weight, bias, inplace):
    """``acc + conv2d(x, weight, bias)`` for a 1x1 ``weight``, written into ``acc`` when ``inplace``; in ``x``'s
    dtype, which ``acc`` must have."""
    weight, bias = _like(x, weight, bias)
    if inplace:
        return _conv_add_.binary(acc, x, weight, bias, _ZERO, _ONE, _ONE, 1, 'add', None, None, [], None)
    return _conv.binary(x, acc, weight, bias, _ZERO, _ONE, _ONE, 1, 'add', None, None, [], None)


def _like(x, weight, bias):
    """Weights in ``x``'s dtype (a no-op in fp32; under autocast the parameters stay fp32)."""
    return weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
