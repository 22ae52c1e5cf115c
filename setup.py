"""MDRN for BasicSR: the MDRN denoiser, an AWGN dataset, knowledge distillation, and a ``basicsr`` command."""
from setuptools import find_packages, setup

setup(
    name='mdrn-basicsr',
    version='0.1.0',
    description='MDRN (Multiple Degradation and Reconstruction Network) denoising with HADS/HMDS distillation, '
    'as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mdrn_arch', 'mdrn_arch.*', 'mdrn_cli', 'mdrn_cli.*', 'mdrn_models',
                                    'mdrn_models.*', 'datasets_prep', 'datasets_prep.*']),
    install_requires=[
        'torch>=2.0',
        'torchvision>=0.15',
        'basicsr==1.4.2',
        'numpy',
        'opencv-python',
        'pyyaml',
        'lmdb',
        'tb-nightly',
        'tqdm',
        'pillow',  # image headers and full integrity checks (awgn_dataset, datasets_prep)
        'h5py',  # reads the published DnCNN/FFDNet MatConvNet weights (MATLAB v7.3 = HDF5)
        'scikit-image',  # the demo data set is built from scikit-image's bundled images
        'safetensors',  # weights that hold only tensors, with a header saying what they are (export-weights)
    ],
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'import-linter'],  # xdist: the suite runs one worker per core
        # basicsr export / the benchmark's onnxruntime mode: torch's ONNX exporter needs onnx, the check and the
        # benchmark run the file in onnxruntime (TorchScript export needs neither)
        'export': ['onnx', 'onnxruntime'],
        # MDRN/DnCNN/FFDNet weights through spandrel's ModelLoader (chaiNNer, ComfyUI): mdrn_arch.spandrel_support
        'spandrel': ['spandrel>=0.4'],
    },
    entry_points={
        # mdrn_cli imports nothing heavy: --help and usage errors answer before torch is imported
        'console_scripts': ['basicsr = mdrn_cli:main'],
        # Other packages can add their archs/models/datasets to the `basicsr` command the same way.
        'basicsr.plugins': ['mdrn = mdrn_models'],
    },
)
