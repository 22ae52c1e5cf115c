"""MDRN (any size), and this package's DnCNN and FFDNet layouts, in spandrel, the model loader behind chaiNNer and
ComfyUI's upscale/restore nodes (``pip install -e ".[spandrel]"``):

    import spandrel
    from mdrn_arch import spandrel_support
    spandrel_support.register()                                 # once per process; spandrel has no plugin hook
    model = spandrel.ModelLoader().load_from_file('weights/mdrn_gray_s25_train400.safetensors')   # or a .pth
    model.purpose, model.scale, model.input_channels            # 'Restoration', 1, 1
    denoised = model(noisy)                                     # float [N, C, H, W] in 0..1

The architecture is read from the tensors' names and shapes (``state_dicts.network_options``: a network is only
detected when it has exactly the tensors of the options it implies, so a near miss is not loaded). Any height and
width (the networks pad their input themselves); fp16 and bf16 run (``supports_half``/``supports_bfloat16``; on the
CPU fp16 convolutions are slow, bf16 is fast only with AVX512-BF16/AMX). FFDNet's noise level is not in its weights:
the model is told 25; set another with ``model.model.sigma = 50``. Outputs are clamped to 0..1 (spandrel's call). spandrel's own DnCNN reads KAIR's layout
(``model.<i>``), ours is ``body.<i>`` (the MatConvNet weights ``basicsr peers`` imports): both load.
"""
from .state_dicts import ARCHS, network_options, unwrapped

IDS = {'MDRN': 'MDRN', 'FFDNet': 'FFDNet', 'DnCNN': 'DnCNN (body.<i> layout)'}  # spandrel's own DnCNN is 'DnCNN'


def _architecture(arch_type):
    from spandrel import Architecture, ImageModelDescriptor, SizeRequirements

    class _Arch(Architecture):
        def __init__(self):
            super().__init__(id=IDS[arch_type], name=arch_type,
                             detect=lambda state: (network_options(state) or {}).get('type') == arch_type)

        def load(self, state_dict):
            opt = network_options(state_dict)
            args = {k: v for k, v in opt.items() if k != 'type'}
            model = ARCHS[arch_type](**args)
            model.load_state_dict(unwrapped(state_dict))
            tags = [f"{args['num_feat']}nf"] + [f'{args[k]}{k[4:]}' for k in ('num_block', 'num_level', 'num_conv')
                                                if k in args]
            return ImageModelDescriptor(model, state_dict, architecture=self, purpose='Restoration', tags=tags,
                                        supports_half=True, supports_bfloat16=True, scale=1,
                                        input_channels=args['num_in_ch'], output_channels=args['num_out_ch'],
                                        size_requirements=SizeRequirements())
    return _Arch()


def register(registry=None):
    """Add MDRN, FFDNet and DnCNN (``body.<i>``) to spandrel's registry (default: ``spandrel.MAIN_REGISTRY``, what
    ``ModelLoader()`` uses); a second call adds nothing. Detected before spandrel's own architectures, whose looser
    checks could claim these state dicts."""
    import spandrel
    registry = spandrel.MAIN_REGISTRY if registry is None else registry
    others = tuple(s.architecture.id for s in registry.architectures() if s.architecture.id not in IDS.values())
    registry.add(*(spandrel.ArchSupport.from_architecture(_architecture(t), before=others) for t in IDS),
                 ignore_duplicates=True)
    return registry
