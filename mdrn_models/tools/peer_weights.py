"""``basicsr peers``: import the published MatConvNet (MATLAB v7.3 = HDF5) weights of DnCNN and FFDNet into BasicSR
checkpoints (``{'params': state_dict}``). Usage and checks: docs/comparing.md.
"""
import os

import numpy as np
import torch

import mdrn_arch  # noqa: F401  (registers DnCNN/FFDNet; before any basicsr import)
from mdrn_cli import parsers

ARCHS = parsers.PEER_ARCHS


class MatFormatError(ValueError):
    """The .mat file is not a MatConvNet network of the expected kind."""


def _text(ds):
    return ''.join(chr(c) for c in np.asarray(ds).ravel())


def read_matconvnet(path):
    """Read ``net.layers`` of a MatConvNet v7.3 .mat file -> list of dicts: ``type``, ``name``, ``weights`` (list
    of float32 arrays in MATLAB dim order), and the numeric fields ``pad``, ``stride``, ``dilate``, ``scale``."""
    import h5py

    if os.path.isdir(path):
        raise FileNotFoundError(f"'{path}' is a folder: pass the .mat file itself "
                                f"(e.g. {os.path.join(path, 'DnCNN_gray_sigma25.mat')}).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}' does not exist: pass the path of a published .mat file "
                                '(e.g. ../shared/weights/peers/DnCNN_gray_sigma25.mat).')
    if not h5py.is_hdf5(path):
        raise MatFormatError(f"'{path}' is not a MATLAB v7.3 (HDF5) file: re-save it in MATLAB with "
                             "save(..., '-v7.3') or use the published DnCNN/FFDNet .mat files.")
    layers = []
    with h5py.File(path, 'r') as f:
        if 'net' not in f or 'layers' not in f['net']:
            raise MatFormatError(f"'{path}' has no net.layers: not a MatConvNet SimpleNN model file.")
        if not isinstance(f['net/layers'], h5py.Dataset) or f['net/layers'].dtype != h5py.ref_dtype:
            # a DagNN model (net.layers a struct array) or any other variable called net
            raise MatFormatError(f"'{path}': net.layers is not a cell array of layer structs: not a MatConvNet "
                                 'SimpleNN model file (a DagNN model?).')
        for ref in np.asarray(f['net/layers']).ravel():
            g = f[ref]
            if not isinstance(g, h5py.Group):
                raise MatFormatError(f"'{path}': net.layers holds a {type(g).__name__}, not layer structs: not a "
                                     'MatConvNet SimpleNN model file.')
            layer = {'type': _text(g['type']) if 'type' in g else '?', 'name': _text(g['name']) if 'name' in g else ''}
            for key in ('pad', 'stride', 'dilate', 'scale'):
                if key in g and g[key].dtype != object:
                    layer[key] = np.asarray(g[key], dtype=np.float64).ravel().tolist()
            refs = np.asarray(g['weights']).ravel() if 'weights' in g and g['weights'].dtype == object else []
            # .T: MATLAB's dimension order (h5py reverses it); empty cells are stored as null references
            layer['weights'] = [np.asarray(f[ref]).T.astype(np.float32) for ref in refs if ref]
            layers.append(layer)
    return layers


def conv_to_torch(layer):
    """A MatConvNet conv layer -> (weight (Cout, Cin, kH, kW), bias (Cout,)) torch tensors; checks pad/stride."""
    if len(layer['weights']) != 2:
        raise MatFormatError(f"conv layer '{layer['name']}' has {len(layer['weights'])} weight arrays, expected 2.")
    w, b = layer['weights']
    while w.ndim < 4:  # MATLAB drops trailing singleton dims (Cout = 1, Cin = 1)
        w = w[..., None]
    kh, kw = w.shape[:2]
    pad = layer.get('pad', [0])
    same = kh == kw and kh % 2 and all(p == (kh - 1) // 2 for p in pad)
    if not same or any(s != 1 for s in layer.get('stride', [1])) or any(d != 1 for d in layer.get('dilate', [1])):
        raise MatFormatError(f"conv layer '{layer['name']}': only odd square kernels with 'same' padding, stride 1 "
                             f'and dilation 1 are supported, got kernel {kh}x{kw}, pad {pad}.')
    # MATLAB (H, W, Cin, Cout) -> (Cout, Cin, H, W); MatConvNet's conv is a correlation, like PyTorch's
    weight = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
    bias = torch.from_numpy(np.ascontiguousarray(b.ravel()))
    if bias.numel() != weight.shape[0]:
        raise MatFormatError(f"conv layer '{layer['name']}': {bias.numel()} biases for {weight.shape[0]} filters.")
    return weight, bias


def _conv_stack(layers, path, expect_types):
    kinds = [layer['type'] for layer in layers]
    unknown = sorted(set(kinds) - set(expect_types))
    if unknown:
        raise MatFormatError(f"'{path}' has layer types {unknown} that this arch does not have: wrong --arch "
                             f'(layers: {kinds[:4]}...)?')
    convs = [conv_to_torch(layer) for layer in layers if layer['type'] == 'conv']
    n_relu = kinds.count('relu')
    if n_relu != len(convs) - 1:
        raise MatFormatError(f"'{path}': {len(convs)} convs but {n_relu} ReLUs; expected conv(+ReLU) chain.")
    return convs


def ffdnet_channel_order(channels):
    """``order[t]`` = MATLAB channel index of PyTorch ``pixel_unshuffle`` channel ``t`` (for ``channels`` image
    channels). PyTorch: ``t = c*4 + 2*dy + dx``; MATLAB SubP: sub-image ``k = dy + 2*dx`` (column-major), channel
    ``c*4 + k``. Checked against the published numbers: the row-major order costs 1.4 dB on a BSD68 image (gray),
    the sub-image-major colour order 8 dB on CBSD68 (colour)."""
    return [c * 4 + dy + 2 * dx for c in range(channels) for dy in range(2) for dx in range(2)]


def convert(layers, arch, path='<mat>'):
    """MatConvNet layers -> (state_dict for ``arch``, network_g option dict). DnCNN: conv/ReLU only (BN folded into
    the biases); FFDNet: SubP (x0.5), concat (noise map), conv/ReLU..., SubP (x2)."""
    if arch == 'DnCNN':
        convs = _conv_stack(layers, path, {'conv', 'relu'})  # an FFDNet file's SubP/concat layers are refused here
        opt = {'type': 'DnCNN', 'num_in_ch': convs[0][0].shape[1], 'num_out_ch': convs[-1][0].shape[0],
               'num_feat': convs[0][0].shape[0], 'num_conv': len(convs)}
    elif arch == 'FFDNet':
        kinds = [layer['type'] for layer in layers]
        if kinds.count('SubP') != 2 or kinds.count('concat') != 1:
            raise MatFormatError(f"'{path}' is not an FFDNet file (no SubP/concat layers): use --arch DnCNN.")
        convs = _conv_stack(layers, path, {'conv', 'relu', 'SubP', 'concat'})
        cin_total, cout_total = convs[0][0].shape[1], convs[-1][0].shape[0]
        if (cin_total - 1) % 4 or cout_total % 4:
            raise MatFormatError(f"'{path}': FFDNet first conv has {cin_total} inputs and last conv {cout_total} "
                                 'outputs; expected 4*C+1 and 4*C.')
        channels = (cin_total - 1) // 4
        in_order = ffdnet_channel_order(channels) + [cin_total - 1]  # noise map stays last
        out_order = ffdnet_channel_order(cout_total // 4)
        w0, b0 = convs[0]
        convs[0] = (w0[:, in_order].contiguous(), b0)
        wl, bl = convs[-1]
        convs[-1] = (wl[out_order].contiguous(), bl[out_order].contiguous())
        opt = {'type': 'FFDNet', 'num_in_ch': channels, 'num_out_ch': cout_total // 4,
               'num_feat': convs[0][0].shape[0], 'num_conv': len(convs), 'sigma': 25}
    else:
        raise ValueError(f'--arch must be one of {ARCHS}, got {arch!r}.')
    state = {}
    for i, (w, b) in enumerate(convs):
        state.update({f'body.{2 * i}.weight': w, f'body.{2 * i}.bias': b})
    return state, opt


def import_mat(mat, arch):
    """Read ``mat``, convert, build the arch from the inferred options and load the weights (strict). Returns
    (network, network_g option dict, state_dict)."""
    from basicsr.archs import build_network

    state, opt = convert(read_matconvnet(mat), arch, mat)
    net = build_network(opt)
    net.load_state_dict(state)
    return net, opt, state


def main(argv=None):
    parser = parsers.peers()
    args = parser.parse_args(argv)
    if os.path.isdir(args.out):  # even with --force: torch.save cannot replace a folder
        parser.exit(2, f"error: '{args.out}' is a folder: give the checkpoint file to write, e.g. "
                       f"{os.path.join(args.out, args.arch.lower() + '.pth')}.\n")
    if os.path.exists(args.out) and not args.force:
        parser.exit(2, f"error: '{args.out}' exists: pass --force to overwrite it or choose another --out.\n")
    try:
        net, opt, state = import_mat(args.mat, args.arch)
    except (FileNotFoundError, MatFormatError, ValueError) as err:
        parser.exit(2, f'error: {err}\n')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save({'params': state}, args.out)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {opt['type']} with {opt['num_conv']} convs, {n_params / 1e6:.3f}M params")
    print('network_g: ' + '{' + ', '.join(f'{k}: {v}' for k, v in opt.items()) + '}')
    if opt['type'] == 'FFDNet':
        print('(FFDNet: set sigma to the noise level of the test set, 0..255 scale)')
    return 0
