"""``KDLayout``: the layer pairs of a distillation run (``train.kd_opt.layers``), checked by one dry forward pass (by
``HKDModel``, and by the preflight on random nets before any folder exists). Options: docs/distillation.md."""
import torch

from mdrn_arch.arch_util import in_channels

from mdrn_models.models.feature_hooks import FeatureHooks, resolve_modules, unwrap
from mdrn_models.utils.messages import first_line


def _in_channels(net, net_opt):
    if isinstance(net_opt, dict) and isinstance(net_opt.get('num_in_ch'), int):
        return net_opt['num_in_ch']
    channels = in_channels(unwrap(net))
    if channels is None:
        raise ValueError(f'cannot tell the input channels of {type(unwrap(net)).__name__}; set num_in_ch in its '
                         'options')
    return channels


def adapter_key(name):
    return name.replace('.', '_') or 'output'  # '': the network itself, whose output is distilled


def _layer_pairs(layers, student):
    """``[(student layer, teacher layer)]`` from ``train.kd_opt.layers`` (default: the student's paper taps)."""
    if layers is None:
        if not hasattr(student, 'paper_kd_taps'):
            raise ValueError(f'train.kd_opt.layers is required for network_g type {type(student).__name__} (only '
                             'MDRN has a default: its paper_kd_taps())')
        layers = student.paper_kd_taps()
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, dict):
        pairs = [(str(s), str(t)) for s, t in layers.items()]
    elif isinstance(layers, (list, tuple)):
        pairs = [(str(n), str(n)) for n in layers]
    else:
        raise ValueError('train.kd_opt.layers must be a list of module names or a {student: teacher} mapping, '
                         f'got {type(layers).__name__}')
    if not pairs:
        raise ValueError('train.kd_opt.layers is empty; name at least one layer to distill')
    return pairs


class KDLayout:
    """The layer pairs of ``opt`` on ``net_g`` (student) and ``net_t`` (teacher); the dry run on a small input checks
    that names resolve and each pair has the same spatial size, and sizes the 1x1 adapters. Attributes: ``pairs``
    ``[(student layer, teacher layer, adapter key)]``; ``adapters`` ``{key: (c_s, c_t)}`` where widths differ;
    ``hooks_s``, ``hooks_t``, the forward hooks kept on both nets (``remove()`` detaches them)."""

    def __init__(self, opt, net_g, net_t):
        kd_opt = (opt.get('train') or {}).get('kd_opt') or {}
        g = unwrap(net_g)
        pairs = _layer_pairs(kd_opt.get('layers'), g)
        students, teachers = [s for s, _ in pairs], [t for _, t in pairs]
        resolve_modules(g, students, 'student network_g')
        resolve_modules(net_t, teachers, 'teacher network_t')
        keys = [adapter_key(s) for s in students]
        if len(set(keys)) != len(keys):
            raise ValueError(f'train.kd_opt.layers names a student layer twice: {students}')
        self.pairs = [(s, t, k) for (s, t), k in zip(pairs, keys)]
        c_s, c_t = _in_channels(g, opt.get('network_g')), _in_channels(net_t, opt.get('network_t'))
        if c_s != c_t:
            raise ValueError(f'the teacher takes {c_t} input channels and the student {c_s}; set network_t.num_in_ch '
                             'to match')
        self.hooks_s = FeatureHooks(net_g, students, 'student network_g')
        self.hooks_t = FeatureHooks(net_t, teachers, 'teacher network_t')
        try:
            self.adapters = self._dry_run(g, net_t, c_s, kd_opt.get('dry_run_size'), opt)
        except Exception:
            self.remove()
            raise

    def _dry_run(self, g, net_t, channels, size, opt):
        size = int(size or ((opt.get('datasets') or {}).get('train') or {}).get('gt_size') or 32)
        # a large crop is stood in for by one of the same remainder modulo 64, so that nets padding their input to
        # different multiples (e.g. MDRN's 2**num_level) disagree in the dry run as they would in training
        size = max(8, size if size <= 96 else 64 + size % 64)
        device = next(g.parameters()).device
        x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        was_training = g.training, net_t.training
        g.eval()
        net_t.eval()
        try:
            with torch.no_grad(), self.hooks_s.capturing(), self.hooks_t.capturing():
                g(x)
                net_t(x)
            fs, ft = self.hooks_s.pop(), self.hooks_t.pop()
        except (RuntimeError, TypeError) as e:
            raise ValueError(f'distillation dry run on a {size}x{size} input failed: {first_line(e)}') from None
        finally:
            g.train(was_training[0])
            net_t.train(was_training[1])
            self.hooks_s.clear()
            self.hooks_t.clear()
        adapters = {}
        for s, t, key in self.pairs:
            a, b = fs[s], ft[t]
            if a.dim() != b.dim() or a.shape[2:] != b.shape[2:]:
                raise ValueError(f'layer pair {s} -> {t}: student feature {list(a.shape)} and teacher feature '
                                 f'{list(b.shape)} differ in size; pick layers at the same resolution')
            if a.shape[1] != b.shape[1]:
                if a.dim() != 4:
                    raise ValueError(f'layer pair {s} -> {t}: channel counts differ ({a.shape[1]} vs {b.shape[1]}) '
                                     'and only 4-D features get a 1x1 adapter')
                adapters[key] = (a.shape[1], b.shape[1])
        return adapters

    def remove(self):
        self.hooks_s.remove()
        self.hooks_t.remove()
