"""MDRN (any size), and this package's DnCNN and FFDNet layouts, in spandrel, the model loader behind chaiNNer and
ComfyUI: call ``register()`` once per process (spandrel has no plugin hook). Usage:
docs/cli.md#spandrel-and-safetensors; the architecture is read from the tensors (``state_dicts.network_options``).
"""
from .state_dicts import ARCHS, network_options, unwrapped

# spandrel's own DnCNN, id 'DnCNN', reads KAIR's layout (model.<i>); ours is body.<i>: both load
IDS = {'MDRN': 'MDRN', 'FFDNet': 'FFDNet', 'DnCNN': 'DnCNN (body.<i> layout)'}


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
