"""The network of any BasicSR option file or checkpoint, built and loaded as ``basicsr test`` would, for the tools that
run models outside BasicSR's pipeline (compare, denoise, export, benchmark), and what they share about running one:
the device, the autocast dtype, a noise-level input (FFDNet), the FLOP count."""
import json
import os.path as osp

import torch

from mdrn_arch import enable_fused_inference
from mdrn_arch.capabilities import cpu_has_native_bf16
from mdrn_arch.state_dicts import network_options
from mdrn_models.models.training_step import INFERENCE_AMP
from mdrn_models.integration.option_files import check_option_file
from mdrn_models.integration.option_checks import OptionError
from mdrn_models.integration.preflight import build_networks, check_network_args
from mdrn_models.utils.checkpoints import (CheckpointError, check_checkpoint, is_safetensors, load_weights,
                                           safetensors_metadata, select_state)

RANDOM_INIT = 'random init'  # build_model's description of an option file without pretrain_network_g


class ModelLoadError(ValueError):
    """An option file or checkpoint whose network cannot be built or loaded; one line, before any compute."""


def pick_device(requested=None, error=ValueError):
    """The ``torch.device`` to run on: ``requested`` ('cpu', 'cuda', 'cuda:1'; None or 'auto': CUDA when available);
    ``error`` (one line) for what is no device, or CUDA where there is none."""
    if requested in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise error(f"{requested!r} is not a device: use 'auto', 'cpu' or 'cuda' (--device)") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise error(f'{requested} asked for but CUDA is not available: use cpu (--device cpu)')
    return device


def amp_note(device_type):
    """A line to print for autocast on a CPU without native bf16 (AVX2-only x86, many ARM cores), where torch runs
    bf16 convs through its slow reference kernels; None elsewhere."""
    if device_type == 'cpu' and not cpu_has_native_bf16():
        return ('note: this CPU has no native bf16 (AVX512-BF16, AMX or AVX-NE-CONVERT): autocast to '
                'bfloat16 runs through torch\'s reference kernels, slower than fp32')
    return None


def amp_dtype_name(device_type):
    """'float16' / 'bfloat16': the tools' autocast dtype, for the report headers."""
    return str(INFERENCE_AMP[device_type]).removeprefix('torch.')


def build_model(spec_path):
    """Option file or checkpoint -> (eval-mode network, description of its weights, options), with the preflight's
    checks as one-line ModelLoadErrors. ``eval_forward(net, options)`` is what ``basicsr test`` runs for the option
    file (e.g. its ×8 self-ensemble); a bare checkpoint's options are ``{}``, a safetensors weight's its header's."""
    if not osp.isfile(spec_path):
        raise ModelLoadError(f"'{spec_path}' does not exist: pass a BasicSR option file (.yml) or a checkpoint (.pth).")
    if spec_path.endswith(('.yml', '.yaml')):
        opt = check_option_file(spec_path)
        if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict):
            raise ModelLoadError(f"'{spec_path}' has no network_g section: pass a BasicSR test/train option file.")
        net_opt = dict(opt['network_g'])
        net = _build_network(spec_path, net_opt)
        path_opt = opt.get('path') or {}
        weights = path_opt.get('pretrain_network_g')
        if weights:
            if not osp.isfile(weights):
                raise ModelLoadError(f"'{spec_path}': pretrain_network_g '{weights}' does not exist (paths are "
                                   'relative to the current directory; import/train the weights first).')
            try:
                _, loaded = load_weights(net, weights, path_opt.get('strict_load_g', True),
                                         path_opt.get('param_key_g', 'params'), 'g', net_opt)
            except CheckpointError as err:
                raise ModelLoadError(f"'{spec_path}': {err}.") from None
            total = len(net.state_dict())
            if loaded < total:  # only non-strict loads get here with a gap: tensors of another shape were skipped
                weights = f'{weights} (strict_load_g: false; {loaded} of {total} tensors loaded)'
        enable_fused_inference(net)
        return net.eval(), weights or RANDOM_INIT, opt
    ckpt = check_checkpoint(spec_path, fix='pass a BasicSR option file (.yml), a torch.save checkpoint or a '
                            'safetensors weight')
    state, _ = select_state(ckpt, spec_path, 'params_ema')  # (a training state, or no weights: one line)
    opt = {}
    if is_safetensors(spec_path):  # a weight that says what it is (export-weights' header): no guessing
        meta = safetensors_metadata(spec_path)
        try:
            net_opt = json.loads(meta['network_g'])
        except (KeyError, ValueError):
            net_opt = network_options(state)
        opt = {'network_g': net_opt, 'weights_metadata': meta}
    else:
        net_opt = network_options(state)  # a bare .pth says nothing of its arch: read from names and shapes
    if not isinstance(net_opt, dict):
        raise ModelLoadError(f"'{spec_path}': cannot infer the arch from this checkpoint; pass an option file with "
                           'network_g and path.pretrain_network_g instead.')
    net = _build_network(spec_path, net_opt)
    load_weights(net, spec_path, True, 'params_ema', 'g', net_opt, ckpt=ckpt)
    enable_fused_inference(net)
    return net.eval(), spec_path, opt


def _build_network(spec_path, net_opt):
    """``network_g`` checked and built by the preflight's functions: an unregistered type or a misspelt argument
    (did-you-mean) or a constructor's complaint is one line, not a traceback from inside the registry or the arch."""
    try:
        check_network_args({'network_g': net_opt})
        return build_networks({'network_g': dict(net_opt)})['g']
    except OptionError as err:
        raise ModelLoadError(f"'{spec_path}': {str(err).rstrip('.')}.") from None


def count_flops(forward, channels, size=256, device='cpu'):
    """FLOPs of ``forward`` on one ``size`` x ``size`` image (torch.utils.flop_counter; 2 FLOPs per MAC): of
    ``eval_forward``'s function, what a compare row times (window padding, ×8 self-ensemble)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, channels, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward(x)
    return counter.get_total_flops()


def takes_sigma(net):
    """Whether ``net`` has a noise-level input (a numeric ``sigma`` attribute, as FFDNet)."""
    return isinstance(getattr(net, 'sigma', None), (int, float))


def set_sigma(net, sigma):
    if takes_sigma(net):
        net.sigma = float(sigma)
