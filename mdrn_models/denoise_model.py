"""``DenoiseModel``: BasicSR's ``SRModel`` plus the ×8 self-ensemble of the paper's MDRN+ (``val.self_ensemble``)."""
import torch

import mdrn_arch  # noqa: F401  (first: basicsr compat alias, registers MDRN)
from basicsr.models.sr_model import SRModel  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402

# MDRN training on CPU runs into float32 denormals, which x86 handles far slower (measured here: a toy MDRN training
# step 14 s -> 0.25 s). Flushing them to zero changes nothing above ~1e-38 and only affects CPU ops. The flag is per
# thread and OpenMP workers copy it when the pool starts, so it is set at import (the `basicsr` command imports the
# plugins before any tensor work), not in the model's __init__.
torch.set_flush_denormal(True)


def self_ensemble(net, x):
    """Average ``net`` over the 8 dihedral transforms of ``x`` (4 rotations × optional flip), each mapped back
    exactly. Works on non-square inputs when the net accepts both orientations."""
    outputs = []
    for flip in (False, True):
        xf = x.flip(-1) if flip else x
        for k in range(4):
            y = net(torch.rot90(xf, k, dims=(-2, -1)))
            y = torch.rot90(y, -k, dims=(-2, -1))
            outputs.append(y.flip(-1) if flip else y)
    return torch.stack(outputs, 0).mean(0)


@MODEL_REGISTRY.register()
class DenoiseModel(SRModel):
    """SRModel for same-size restoration; ``val: {self_ensemble: true}`` tests with the ×8 self-ensemble (MDRN+)."""

    def _self_ensemble_on(self):
        return bool((self.opt.get('val') or {}).get('self_ensemble', False))

    def test(self):
        net = getattr(self, 'net_g_ema', None)
        if net is None:
            net = self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self_ensemble(net, self.lq) if self._self_ensemble_on() else net(self.lq)
        if was_training and net is self.net_g:
            net.train()
