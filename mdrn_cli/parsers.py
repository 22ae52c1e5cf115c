"""The ``basicsr`` command table (``COMMANDS``) and every sub-command's flags and choice lists, with argparse only (no
torch, basicsr, numpy or cv2: ``--help`` and usage errors answer at once). It imports nothing of the project, so the
dispatcher, the tools and any layer may read it (docs/cli.md).
"""
import argparse
import os
from typing import Callable, NamedTuple

ROOT_COMMANDS = ('train', 'test', 'demo')  # the commands with a --root, which may also come before the command

TILE_ALIGN = 8  # tile origins on multiples of 2**num_level keep MDRN's stride-2 grids aligned (DenoiseModel's tiles)
BENCHMARK_MODES = ('fp32', 'channels_last', 'amp', 'compile', 'onnxruntime')
PEER_ARCHS = ('DnCNN', 'FFDNet')  # the published MatConvNet weights the peers tool imports
WEIGHT_DTYPES = ('fp16', 'fp32')  # what export-weights stores
DEVICE_HELP = 'default: cuda when available, else cpu'
ONNX_OPSET = 17  # onnxruntime >= 1.12 and most other runtimes read it


def _parser(command, **kwargs):
    summary = COMMANDS[command].summary
    return argparse.ArgumentParser(prog=f'basicsr {command}', description=summary[:1].upper() + summary[1:] + '.',
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def top():
    """``basicsr [--root DIR] COMMAND ...``: the command and its arguments, unparsed (the command parses them)."""
    width = max(map(len, COMMANDS))
    listing = '\n'.join(f'  {name:<{width}}  {command.summary}' for name, command in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog='basicsr', formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MDRN denoising on BasicSR 1.4.2: BasicSR's own train/test pipelines with every installed "
                    'plugin registered, and this project\'s tools.',
        epilog=f'commands (basicsr COMMAND --help lists its flags):\n{listing}\n\n'
               'torch threads: OMP_NUM_THREADS when set, else one per physical core.')
    p.add_argument('--root', metavar='DIR', default=None,
                   help=f'the --root of {", ".join(ROOT_COMMANDS)}, given before the command')
    p.add_argument('command', choices=COMMANDS, metavar='COMMAND', help='one of the commands below')
    p.add_argument('args', nargs=argparse.REMAINDER, metavar='...', help="the command's arguments")
    return p


def train_test(command):
    """``basicsr train`` / ``basicsr test``: BasicSR's own flags (``basicsr.utils.options.parse_options``, which
    parses them again from the unchanged command line) plus ``--root``."""
    p = _parser(command, epilog=(
        "Every flag but --root is BasicSR's own, passed to it unchanged.\n"
        'Several processes: torchrun --nproc_per_node=N $(which basicsr) train -opt X.yml --launcher pytorch\n'
        '(gloo on the CPU, NCCL on GPUs); with several, torchrun sets OMP_NUM_THREADS=1 unless it is set.'))
    p.add_argument('-opt', required=True, metavar='X.yml', help='the option file (plain YAML; checked before any work)')
    p.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none',
                   help='none: one process (default); pytorch: one of the processes torchrun starts; slurm: srun')
    p.add_argument('--auto_resume', action='store_true',
                   help='train: resume from the newest readable training state of this run under --root')
    p.add_argument('--debug', action='store_true',
                   help="BasicSR's debug run: named debug_NAME, validates and saves every 8 iterations, logs each one")
    p.add_argument('--local_rank', type=int, default=0,
                   help='set by torch.distributed.launch (--local-rank=N is accepted too); torchrun sets LOCAL_RANK')
    p.add_argument('--force_yml', nargs='+', metavar='KEY:SUB=VALUE',
                   help='override options, e.g. train:total_iter=1000 manual_seed=7; datasets:NAME=~ drops a dataset')
    p.add_argument('--root', metavar='DIR', default=os.getcwd(),
                   help='where experiments/, results/ and tb_logger/ go and where --auto_resume looks (default: the '
                        'current directory)')
    return p


def denoise():
    p = _parser('denoise')
    p.add_argument('-opt', required=True, help='basicsr test option file of the weight (or a .pth checkpoint)')
    p.add_argument('-i', '--input', required=True, help='image file or folder of images')
    p.add_argument('-o', '--output', required=True, help='output image file, or folder')
    p.add_argument('--add_noise', type=float, default=None, metavar='SIGMA',
                   help='add AWGN of this sigma (0-255 scale) first; also writes the noisy input (*_noisy.png)')
    p.add_argument('--sigma', type=float, default=None, metavar='SIGMA',
                   help='noise level (0-255 scale) told to a network with a noise-level input (FFDNet); '
                        "default: --add_noise, else the option file's network_g.sigma")
    p.add_argument('--seed', type=int, default=0, help='seed of --add_noise (default 0)')
    p.add_argument('--tile', type=int, default=None, metavar='SIZE',
                   help=f'denoise in SIZE-pixel tiles (multiple of {TILE_ALIGN}) to bound memory')
    p.add_argument('--max-megapixels', type=float, default=None, metavar='MP',
                   help='refuse input images with more megapixels than this, read from their headers before decoding '
                        '(raise it for very large images; the default bound is in the message)')
    p.add_argument('--force', action='store_true', help='overwrite existing outputs')
    return p


def compare():
    p = _parser('compare')
    p.add_argument('--models', nargs='+', required=True, metavar='NAME[@SIGMA]=PATH',
                   help='option file (.yml) or checkpoint (.pth) per model; @SIGMA restricts it to one tested sigma')
    p.add_argument('--sets', nargs='+', required=True, metavar='NAME=FOLDER', help='folders of clean test images')
    p.add_argument('--sigmas', nargs='+', type=float, default=[25], help='AWGN levels, 0..255 scale (default 25)')
    p.add_argument('--out', required=True, help='output folder (compare.md, compare.csv, per_image.csv, figures/)')
    p.add_argument('--channels', type=int, choices=(1, 3), default=None,
                   help="1 gray / 3 color (default: the models' input channels)")
    p.add_argument('--noise-seed', type=int, default=None, help='eval noise seed, as noise_seed in option files '
                   '(default 0)')
    p.add_argument('--noise-seeds', type=int, nargs='+', default=None, metavar='SEED',
                   help='repeat the noise draw with each seed: the table reports the mean and its spread across draws')
    p.add_argument('--baseline', default=None, metavar='NAME',
                   help='a --models name: every other model gets its paired difference to it on the same images and '
                        'noise, with a 95%% bootstrap confidence interval and the count of images it improves')
    p.add_argument('--max-images', type=int, default=None, help='only the first N images of each set (quick runs)')
    p.add_argument('--figures-per-set', type=int, default=1, help='crop figures for the first N images (default 1)')
    p.add_argument('--crop', type=int, nargs=3, metavar=('Y', 'X', 'SIZE'), default=None,
                   help='crop for the figures (default: the --crop-size window with the most fine detail)')
    p.add_argument('--crop-size', type=int, default=64)
    p.add_argument('--zoom', type=int, default=3, help='nearest-neighbour zoom of the crops (default 3)')
    p.add_argument('--flops-size', type=int, default=256, help='input side for the FLOP count (default 256)')
    p.add_argument('--max-megapixels', type=float, default=None, metavar='MP',
                   help='refuse test images with more megapixels than this, read from their headers (raise it for '
                        'very large images; the default bound is in the message)')
    p.add_argument('--device', default=None, choices=('cpu', 'cuda'), help=DEVICE_HELP)
    p.add_argument('--amp', action='store_true', help='run the models under autocast: fp16 on CUDA, bf16 on the CPU '
                   '(fast where the CPU has bf16 instructions, e.g. AVX512-BF16/AMX)')
    p.add_argument('--force', action='store_true', help='overwrite compare.md / compare.csv / per_image.csv in --out '
                   'and delete the figures a previous run left in --out/figures')
    return p


def compare_seeds():
    p = _parser('compare-seeds')
    p.add_argument('folders', nargs='*', metavar='DIR',
                   help="one 'basicsr compare --out' folder per training seed (its per_image.csv); the folder's name "
                        'labels the seed')
    p.add_argument('--baseline', metavar='NAME', help='the model every other one is compared with, in each folder')
    p.add_argument('--models', nargs='+', metavar='NAME', help='only these models (default: all but the baseline)')
    p.add_argument('--sets', nargs='+', metavar='NAME', help='only these test sets (default: all)')
    p.add_argument('--brief', action='store_true', help='only the difference pooled over seeds and the verdict')
    p.add_argument('--update', nargs='+', metavar='FILE',
                   help='regenerate the tables between <!-- compare-seeds ARGS --> and <!-- /compare-seeds --> in '
                        'these markdown files (run at the repository root)')
    return p


def benchmark():
    p = _parser('benchmark')
    p.add_argument('--sizes', type=int, nargs='+', default=[256, 512, 1024])
    p.add_argument('--models', nargs='+', default=['DnCNN', 'FFDNet', 'MDRN', 'MDRN-2B'])
    p.add_argument('--modes', nargs='+', default=None, choices=BENCHMARK_MODES,
                   help='default: fp32 channels_last (CPU); fp32 channels_last amp (CUDA). amp: autocast fp16 on '
                        'CUDA, bf16 on the CPU (fast where the CPU has bf16 instructions, e.g. AVX512-BF16/AMX). '
                        'onnxruntime (CPU): the ONNX export in an onnxruntime session')
    p.add_argument('--repeats', type=int, default=None, help='timed rounds per size (default CPU: 3/2/1 for '
                   '<=256/<=512/larger; CUDA: 20), and of training steps after one warm-up (default 3)')
    p.add_argument('--device', default=None, choices=('cpu', 'cuda'), help=DEVICE_HELP)
    p.add_argument('--threads', type=int, default=None,
                   help="torch CPU threads (default: torch's; under `basicsr`, OMP_NUM_THREADS, else the physical "
                        'cores)')
    p.add_argument('--keep-freed-memory', action='store_true',
                   help="glibc keeps freed memory, as the basicsr/denoise/compare commands do (default: the library's "
                        'behaviour in your own process, glibc defaults)')
    p.add_argument('--breakdown', action='store_true',
                   help='also time every op of one fp32 forward per model and size: conv GMAC/s by kind')
    p.add_argument('--train', action='store_true', help='also time plain vs HADS vs HMDS training steps')
    p.add_argument('--train-only', action='store_true', help='only the training-step table')
    p.add_argument('--train-batch', type=int, default=4)
    p.add_argument('--train-size', type=int, default=64)
    p.add_argument('--out', default=None, help='also write the Markdown here (refused if it exists, unless --force)')
    p.add_argument('--force', action='store_true')
    return p


def export_weights():
    p = _parser('export-weights')
    p.add_argument('ckpt', help="BasicSR network checkpoint, e.g. experiments/NAME/models/net_g_latest.pth")
    p.add_argument('out', help='weight file to write')
    p.add_argument('--key', default='params', help='which state dict of the checkpoint (params or params_ema)')
    p.add_argument('--dtype', choices=WEIGHT_DTYPES, default='fp16', help='stored precision (default fp16)')
    p.add_argument('--format', choices=('pth', 'safetensors'), default=None,
                   help="default: from OUT's extension (.safetensors, else pth)")
    p.add_argument('-opt', default=None, metavar='X.yml',
                   help="the run's option file: network_g, sigma, data and iterations for the safetensors header "
                        '(default: the network read from the tensors)')
    p.add_argument('--force', action='store_true', help='overwrite an existing output')
    return p


def peers():
    p = _parser('peers')
    p.add_argument('--mat', required=True, help='published MatConvNet .mat (v7.3/HDF5) file')
    p.add_argument('--arch', required=True, choices=PEER_ARCHS)
    p.add_argument('--out', required=True, help='output BasicSR checkpoint (.pth), {"params": state_dict}')
    p.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    return p


def demo():
    p = _parser('demo')
    p.add_argument('--root', default=os.getcwd(), help='where datasets/demo, experiments/, results/ go')
    p.add_argument('--iters', type=int, default=None, help='override total_iter of every training run')
    return p


def export():
    p = _parser('export')
    p.add_argument('-opt', required=True, help='basicsr test option file of the weight (or a .pth checkpoint)')
    p.add_argument('-o', '--output', required=True, help='file to write: .onnx (ONNX) or .pt/.ts (TorchScript)')
    p.add_argument('--format', choices=('onnx', 'torchscript'), default=None, help="default: from -o's extension")
    p.add_argument('--image', default=None,
                   help="clean image of the check (default: the first image of the option file's first test/val "
                        'dataset, else scikit-image camera/astronaut)')
    p.add_argument('--sigma', type=float, default=None,
                   help="AWGN level of the check (0..255; default: the dataset's, else FFDNet's network_g.sigma, "
                        'else 25); also the level told to FFDNet')
    p.add_argument('--opset', type=int, default=ONNX_OPSET, help=f'ONNX opset (default {ONNX_OPSET})')
    p.add_argument('--force', action='store_true', help='overwrite an existing -o')
    return p


def gpu_session():
    p = _parser('gpu-session')
    p.add_argument('--data', required=True, help='folder holding Train400/, Set12/ and BSD68/ (clean gray PNGs)')
    p.add_argument('--out', required=True, help='new (or empty) folder for every result of the session')
    p.add_argument('--minutes', type=float, default=12, help='wall-time budget of the whole session (default 12): '
                   'each step gets its share and keeps what it finished when that runs out')
    p.add_argument('--tiny', action='store_true', help='CPU check of the whole session in about a minute: tiny '
                   'sizes, batches and iterations, the same steps and files')
    p.add_argument('--device', default=None, choices=('cpu', 'cuda'), help=DEVICE_HELP)
    return p


class Command(NamedTuple):
    module: str  # the module whose main(argv) runs it (train/test: pipelines.run)
    summary: str  # one line, for `basicsr --help` and the command's own
    parser: Callable  # () -> its argparse parser (--help, usage errors, and the tool's own parsing)


# `basicsr --help` lists them in this order
COMMANDS = {
    'train': Command('mdrn_models.tools.pipelines', "train a network: BasicSR's train pipeline on an option file",
                     lambda: train_test('train')),
    'test': Command('mdrn_models.tools.pipelines',
                    "test trained weights: BasicSR's test pipeline (PSNR/SSIM, denoised images)",
                    lambda: train_test('test')),
    'denoise': Command('mdrn_models.tools.denoise', 'denoise your own images with a trained model', denoise),
    'compare': Command('mdrn_models.tools.compare',
                       'compare denoisers on identical noisy inputs: a PSNR/SSIM table and figures', compare),
    'compare-seeds': Command('mdrn_models.tools.compare_seeds',
                             'pool paired comparisons over training seeds: a mean difference with an interval over '
                             'seeds', compare_seeds),
    'benchmark': Command('mdrn_models.tools.benchmark',
                         'latency, throughput and peak memory of denoisers; training-step time', benchmark),
    'export': Command('mdrn_models.tools.export', 'export a network to ONNX or TorchScript, checked against PyTorch',
                      export),
    'export-weights': Command('mdrn_models.tools.export_weights',
                              'turn a training checkpoint into a small weight file to ship', export_weights),
    'peers': Command('mdrn_models.tools.peer_weights', 'import the published DnCNN/FFDNet MatConvNet weights', peers),
    'demo': Command('mdrn_models.tools.demo',
                    "the paper's story at toy scale on the CPU: teachers, students, a PSNR table", demo),
    'gpu-session': Command('mdrn_models.tools.gpu_session',
                           'a timed session on a GPU you have for a short while (rented or shared): CUDA benchmarks, '
                           'a DDP distillation run with resume, training, test and export, all in one folder',
                           gpu_session),
}
