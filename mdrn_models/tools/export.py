"""``basicsr export``: the network of a test option file (or checkpoint), as ``model_loading.build_model`` builds it,
to ONNX or TorchScript, checked against PyTorch (``export_check``). What the file holds, the check and its limits:
docs/cli.md (Export)."""
import contextlib
import os
import os.path as osp
import sys
import tempfile
import warnings

import numpy as np
import torch

import mdrn_arch.basicsr_compat  # noqa: F401  (before any basicsr import)
import mdrn_models  # noqa: F401  (registers MDRN/DnCNN/FFDNet/AWGNDenoisingDataset)

from mdrn_cli import parsers
from mdrn_arch.arch_util import in_channels
from mdrn_models.tools import malloc_tuning
from mdrn_models.data.awgn_dataset import parse_sigma
from mdrn_models.integration.option_files import OptionFileError
from mdrn_models.tools.model_loading import ModelLoadError, build_model, takes_sigma
from mdrn_models.models.denoise_model import DenoiseModel, network_forward, tile_options
from mdrn_models.utils.messages import first_line
from mdrn_models.utils.checkpoints import CheckpointError
from mdrn_models.tools.export_check import ExportError, check_image, check_sizes, compare_at, noise_level

FORMATS = {'.onnx': 'onnx', '.pt': 'torchscript', '.ts': 'torchscript'}
OPSET = parsers.ONNX_OPSET  # ONNX opset; every op of MDRN/DnCNN/FFDNet is in it
MIN_OPSET, MAX_OPSET = 11, 20  # 11: Pad with amounts computed from the shape; 20: the TorchScript-based exporter's
# no multiple of 8 nor of a window: every padding branch (MDRN, FFDNet's odd sides, SwinIR) stays in the graph
TRACE_HW = (45, 67)
MAX_ABS_DIFF = 1e-4  # largest |exported - PyTorch| accepted on the 0..1 scale
MAX_PSNR_DIFF = 0.01  # largest |PSNR(exported) - PSNR(PyTorch)| accepted, dB
INSTALL_HINT = 'pip install -e ".[export]"'
RUNTIME = {'onnx': 'onnxruntime', 'torchscript': 'torch.jit'}


def onnx_modules():
    """(onnx, onnxruntime), or a one-line ExportError naming the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        name = getattr(err, 'name', None) or 'onnx/onnxruntime'
        raise ExportError(f'ONNX export needs onnx and onnxruntime ({name} is not installed): {INSTALL_HINT}') \
            from None
    return onnx, onnxruntime


def output_format(output, fmt):
    """--format, else the one of -o's extension."""
    if fmt:
        return fmt
    ext = osp.splitext(output)[1].lower()
    if ext not in FORMATS:
        raise ExportError(f"cannot tell the format from '{output}': end -o with .onnx (ONNX) or .pt/.ts "
                          '(TorchScript), or pass --format onnx|torchscript')
    return FORMATS[ext]


def export_module(net, opt=None):
    """The module to export: ``net`` inside its window padding (``opt``: its options), or ``net`` itself where it
    has a noise-level input (its ``forward(x, sigma)`` is exported with ``sigma`` as an input)."""
    net = net.float().cpu().eval()
    return net if takes_sigma(net) else network_forward(net, opt)


def example_inputs(channels, sigma_input):
    """The inputs the module is traced with: a batch-1 image (and a noise level)."""
    x = torch.rand(1, channels, *TRACE_HW, generator=torch.Generator().manual_seed(0))
    return (x, torch.tensor([25.0])) if sigma_input else (x,)


@contextlib.contextmanager
def quiet():
    """Silences the warnings the export prints for every model and that the check after it makes moot: TracerWarnings
    (e.g. which padding branch runs: TRACE_HW takes the padding ones) and the deprecation notices of torch.jit and of
    the TorchScript-based ONNX exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', FutureWarning)
        yield


def export_onnx(module, path, channels, sigma_input, opset=OPSET):
    """Write ``module`` to ``path`` as ONNX with dynamic batch, height and width (and ``sigma`` length). The
    TorchScript-based exporter (``dynamo=False``, why: docs/cli.md) needs only onnx and takes ``dynamic_axes`` as its
    own; it is deprecated since torch 2.9 but present in 2.14, and the check after the export proves the file."""
    names = ['input', 'sigma'] if sigma_input else ['input']
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}, 'output': {0: 'batch', 2: 'height', 3: 'width'}}
    if sigma_input:
        axes['sigma'] = {0: 'sigma_batch'}
    with quiet(), torch.no_grad():
        torch.onnx.export(module, example_inputs(channels, sigma_input), path, dynamo=False, input_names=names,
                          output_names=['output'], dynamic_axes=axes, opset_version=opset)


def export_torchscript(module, path, channels, sigma_input):
    """Write ``torch.jit.trace(module)`` to ``path``. Tracing, not scripting (MDRN's forward takes ``*inputs`` and
    builds its graph with ``getattr``), records the shape arithmetic of the padding and cropping."""
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example_inputs(channels, sigma_input), check_trace=False)
        torch.jit.save(traced, path)


def ort_session(path, threads=None):
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (default: torch's), not spinning
    between runs: spinning threads would take the cores from whatever runs next (the benchmark's PyTorch modes)."""
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return onnxruntime.InferenceSession(path, so, providers=['CPUExecutionProvider'])


def load_exported(path, fmt, threads=None):
    """The exported file as a function ``run(x, sigma=None) -> output tensor`` (``sigma``: the noise level of a
    network with a noise-level input, 0..255 scale)."""
    if fmt == 'onnx':
        sess = ort_session(path, threads)
        takes = any(i.name == 'sigma' for i in sess.get_inputs())

        def run(x, sigma=None):
            feed = {'input': x.detach().cpu().float().contiguous().numpy()}
            if takes:
                feed['sigma'] = np.array([sigma], np.float32)
            return torch.from_numpy(sess.run(['output'], feed)[0])
        return run
    with quiet():
        module = torch.jit.load(path, map_location='cpu').eval()

    def run(x, sigma=None):
        with torch.no_grad():
            return module(x) if sigma is None else module(x, torch.tensor([float(sigma)]))
    return run


def test_only_steps(opt):
    """What ``basicsr test`` runs for ``opt`` besides the network (the ×8 self-ensemble, ``val.tile``), in words,
    or '': the export leaves them out."""
    from basicsr.utils.registry import MODEL_REGISTRY
    try:
        if not issubclass(MODEL_REGISTRY.get(opt.get('model_type', 'SRModel')), DenoiseModel):
            return ''
        tile = tile_options(opt)
    except (KeyError, ValueError):
        return ''
    val = opt.get('val') or {}
    return ' and '.join(name for name, on in (('×8 self-ensemble', val.get('self_ensemble')), ('val.tile', tile))
                        if on)


# ---------------------------------------------------------------------------------------------------------- main
def plan(args):
    """Every check that needs no network, before anything is built or written -> the format."""
    out = args.output
    if osp.isdir(out):
        example = osp.join(out, 'model.pt' if args.format == 'torchscript' else 'model.onnx')
        raise ExportError(f"-o '{out}' is a folder: give a file name, e.g. {example}")
    fmt = output_format(out, args.format)
    if osp.exists(out) and not args.force:
        raise ExportError(f"'{out}' exists: pass --force to overwrite it or choose another -o")
    folder = osp.dirname(osp.abspath(out))
    if not osp.isdir(folder):
        raise ExportError(f"-o '{out}': folder '{folder}' does not exist; create it or choose another -o")
    if args.sigma is not None:
        parse_sigma(args.sigma, '--sigma', ExportError)
    if fmt == 'onnx':
        onnx_modules()
        if not MIN_OPSET <= args.opset <= MAX_OPSET:
            raise ExportError(f'--opset must be between {MIN_OPSET} and {MAX_OPSET} (the TorchScript-based exporter\'s '
                              f'range; default {OPSET}), got {args.opset}')
    return fmt


def main(argv=None):
    args = parsers.export().parse_args(argv)
    malloc_tuning.keep_freed_memory()  # as basicsr denoise / compare: the PyTorch side of the check runs faster
    try:
        fmt = plan(args)
        net, weights, opt = build_model(args.opt)
        channels = in_channels(net) or 3
        img, source, ds = check_image(args.image, opt, channels)
        sigma, seed = noise_level(args.sigma, ds, net)
    except (ExportError, ModelLoadError, OptionFileError, CheckpointError) as err:
        sys.exit(f'basicsr export: error: {err}')
    sigma_input = takes_sigma(net)
    module = export_module(net, opt)
    try:  # a network that cannot run at all is its own problem, not the exporter's
        with torch.no_grad():
            module(*example_inputs(channels, sigma_input))
    except Exception as err:  # noqa: BLE001  (whatever the arch raises: one line)
        sys.exit(f'basicsr export: error: {type(net).__name__} fails in PyTorch on a {channels}-channel '
                 f'{TRACE_HW[0]}x{TRACE_HW[1]} image: {type(err).__name__}: {first_line(err)}')
    out = args.output
    try:  # a temporary name next to -o, renamed once it passed the check: a failed --force run keeps the old file
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(out)), prefix=f'.{osp.basename(out)}.',
                                   suffix='.part')
    except OSError as err:
        sys.exit(f"basicsr export: error: cannot write next to '{out}' ({err.strerror}): choose another -o")
    os.close(fd)
    try:
        try:
            if fmt == 'onnx':
                export_onnx(module, tmp, channels, sigma_input, args.opset)
                onnx, _ = onnx_modules()
                onnx.checker.check_model(tmp, full_check=True)
            else:
                export_torchscript(module, tmp, channels, sigma_input)
            run = load_exported(tmp, fmt)
        except Exception as err:  # noqa: BLE001  (whatever the exporter raises about the arch: one line)
            raise ExportError(f'exporting {type(net).__name__} to {fmt} failed: {type(err).__name__}: '
                              f'{first_line(err)}') from None
        results = []
        for hw in check_sizes(img.shape[:2]):
            try:
                results.append((hw, *compare_at(module, run, img, hw, sigma, seed, sigma_input)))
            except ExportError:
                raise
            except Exception as err:  # noqa: BLE001  (a graph that does not hold at this size)
                raise ExportError(f'the exported {type(net).__name__} fails at {hw[0]}x{hw[1]}: '
                                  f'{type(err).__name__}: {first_line(err)}') from None
    except ExportError as err:
        os.remove(tmp)
        sys.exit(f'basicsr export: error: {err}; nothing was written')
    except BaseException:
        os.remove(tmp)
        raise

    rt = RUNTIME[fmt]
    kind = f'ONNX opset {args.opset}' if fmt == 'onnx' else 'TorchScript (torch.jit.trace)'
    params = sum(p.numel() for p in net.parameters()) / 1e6
    io = (f"input 'input' float32 [batch, {channels}, height, width], 0..1 {'RGB' if channels == 3 else 'gray'}"
          + (", 'sigma' float32 [1] (noise level, 0..255)" if sigma_input else '')
          + "; output 'output' [batch, " + f'{channels}, height, width]')
    print(f'{type(net).__name__} ({params:.3f}M params; weights: {weights}) as {kind}, dynamic batch/height/width')
    print(f'  {io}')
    extras = test_only_steps(opt)
    if extras:
        print(f"  note: the file is the network alone; basicsr test also runs this option file's {extras}")
    print(f'  check: {source}, centre crops + AWGN sigma {sigma:g} (noise seed {seed})'
          + (f', sigma {sigma:g} told to the network' if sigma_input else ''))
    failed = []
    for (h, w), diff, psnr_ref, psnr_out in results:
        delta = psnr_out - psnr_ref
        print(f'  {h}x{w}: max |{rt} - PyTorch| = {diff:.2e}; PSNR {psnr_out:.4f} dB ({rt}) vs {psnr_ref:.4f} dB '
              f'(PyTorch), difference {delta:+.4f} dB')
        if not diff <= MAX_ABS_DIFF or not abs(delta) <= MAX_PSNR_DIFF:  # 'not <=': a nan fails too
            failed.append(f'{h}x{w}: max |{rt} - PyTorch| {diff:.2e} (limit {MAX_ABS_DIFF:g}), PSNR difference '
                          f'{delta:+.4f} dB (limit {MAX_PSNR_DIFF:g})')
    if failed:
        os.remove(tmp)
        sys.exit(f'basicsr export: error: the exported file does not match PyTorch at {failed[0]}; nothing was '
                 'written')
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp made it private; the output gets the permissions of any new file
    os.replace(tmp, out)
    print(f'wrote {out} ({osp.getsize(out) / 2**20:.1f} MiB)')
    return 0
