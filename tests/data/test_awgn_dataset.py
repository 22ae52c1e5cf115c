"""AWGNDenoisingDataset: noise statistics, reproducible evaluation noise, the HMDS teacher input, backends, errors,
and the real ``basicsr`` command on it (train on tiny images; test on ../shared Set12)."""
import math
import re

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mdrn_models  # noqa: F401  (registers the dataset; compat alias first)
from basicsr.data import build_dataset
from conftest import REPO, write_yml
from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset
from mdrn_models.integration.option_checks import OptionError


def textured(h, w, c, seed):
    """A smooth, non-constant uint8 test image (values well inside 0..255)."""
    yy, xx = np.mgrid[:h, :w]
    chans = [60 + 40 * (1 + np.sin(xx / (5 + k + seed)) * np.cos(yy / (7 + k))) + 30 * k for k in range(c)]
    img = np.stack(chans, -1).clip(0, 255).astype(np.uint8)
    return img[..., 0] if c == 1 else img


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """Five color images of different sizes, written at test time."""
    root = tmp_path_factory.mktemp('clean')
    for k, (h, w) in enumerate([(300, 280), (96, 128), (130, 100), (64, 72), (257, 263)]):
        cv2.imwrite(str(root / f'img{k}.png'), textured(h, w, 3, k))
    return root


def opt(folder, **kw):
    base = {'name': 't', 'type': 'AWGNDenoisingDataset', 'phase': 'val', 'dataroot_gt': str(folder),
            'io_backend': {'type': 'disk'}, 'channels': 3, 'sigma': 25, 'noise_seed': 0}
    base.update(kw)
    return base


@pytest.mark.parametrize('channels,sigma', [(3, 25), (1, 50), (3, 5)])
def test_training_noise_std_within_2_percent(folder, channels, sigma, tmp_path):
    (tmp_path / 'meta.txt').write_text('img0.png\n')  # the images large enough for a 256 crop
    torch.manual_seed(0)  # training noise comes from the global RNG: the same draw whatever ran before
    ds = AWGNDenoisingDataset(opt(folder, phase='train', gt_size=256, channels=channels, sigma=sigma,
                                  use_hflip=True, use_rot=True, meta_info=str(tmp_path / 'meta.txt')))
    item = ds[0]  # the 300x280 image: a 256x256 crop
    assert item['lq'].shape == item['gt'].shape == (channels, 256, 256)
    noise = (item['lq'] - item['gt']).double()
    assert abs(noise.std().item() / (sigma / 255) - 1) < 0.02
    assert abs(noise.mean().item()) < 4 * (sigma / 255) / math.sqrt(noise.numel())
    assert item['lq'].min() < 0 or item['lq'].max() > 1 or sigma < 10  # not clipped: values leave [0, 1]
    assert item['lq_path'] == item['gt_path'] and item['gt_path'].endswith('img0.png')


def test_training_draws_fresh_noise_and_blind_sigma_from_the_range(folder, tmp_path):
    (tmp_path / 'meta.txt').write_text('img0.png\n')
    ds = AWGNDenoisingDataset(opt(folder, phase='train', gt_size=200, sigma=[10, 60],
                                  meta_info=str(tmp_path / 'meta.txt')))
    torch.manual_seed(0)
    items = [ds[0] for _ in range(6)]
    sigmas = [it['sigma'] for it in items]
    assert all(10 <= s <= 60 for s in sigmas) and len(set(sigmas)) == 6
    for it in items:  # each sample's noise has the std of its own drawn sigma
        std = (it['lq'] - it['gt']).double().std().item()
        assert abs(std / (it['sigma'] / 255) - 1) < 0.03
    a, b = items[0], items[1]
    assert not torch.equal(a['lq'] - a['gt'], b['lq'] - b['gt'])


def test_eval_noise_is_a_function_of_seed_and_index_only(folder):
    torch.manual_seed(1)
    np.random.seed(1)
    first = [AWGNDenoisingDataset(opt(folder))[k]['lq'] for k in range(5)]
    torch.manual_seed(2)
    np.random.seed(2)
    ds = AWGNDenoisingDataset(opt(folder))
    again = [ds[k]['lq'] for k in reversed(range(5))][::-1]  # another order, another global RNG state
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other_seed = AWGNDenoisingDataset(opt(folder, noise_seed=1))[0]['lq']
    assert not torch.equal(first[0], other_seed)
    # the noise is the same for every model and run, and has the right level on the full image
    item = ds[0]
    std = (item['lq'] - item['gt']).double().std().item()
    assert abs(std * 255 / 25 - 1) < 0.02


@pytest.mark.parametrize('phase', ['val', 'test'])
def test_eval_noise_identical_across_worker_counts(folder, phase):
    ds = AWGNDenoisingDataset(opt(folder, phase=phase))

    def run(workers):
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=workers)
        return [b['lq'][0] for b in loader]

    torch.manual_seed(0)
    zero = run(0)
    torch.manual_seed(123)
    two = run(2)
    assert len(zero) == len(two) == 5
    for a, b in zip(zero, two):
        assert torch.equal(a, b)


@pytest.mark.parametrize('phase', ['train', 'val'])
def test_lq_teacher_is_the_same_draw_scaled(folder, phase):
    ds = AWGNDenoisingDataset(opt(folder, phase=phase, gt_size=64, sigma=70, sigma_teacher=50))
    item = ds[1]
    gt, lq, lqt = item['gt'], item['lq'], item['lq_teacher']
    assert lqt.shape == lq.shape
    assert torch.allclose(lqt - gt, (50 / 70) * (lq - gt), atol=1e-6, rtol=0)
    assert abs((lqt - gt).double().std().item() * 255 / 50 - 1) < 0.05
    assert not torch.allclose(lqt, lq)


def test_gray_reads_one_channel_and_color_three(folder):
    gray = AWGNDenoisingDataset(opt(folder, channels=1))[3]
    color = AWGNDenoisingDataset(opt(folder, channels=3))[3]
    assert gray['gt'].shape == (1, 64, 72) and color['gt'].shape == (3, 64, 72)
    ref = cv2.imread(str(folder / 'img3.png'), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    assert np.array_equal(gray['gt'][0].numpy(), ref)
    bgr = cv2.imread(str(folder / 'img3.png')).astype(np.float32) / 255
    assert np.array_equal(color['gt'].numpy(), bgr[..., ::-1].transpose(2, 0, 1))  # RGB order, as BasicSR


def test_meta_info_selects_images(folder, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('img4.png (257,263,3)\nimg1.png (96,128,3)\n')
    ds = build_dataset(opt(folder, meta_info=str(meta)))
    assert len(ds) == 2
    assert ds[0]['gt_path'].endswith('img4.png') and ds[1]['gt'].shape == (3, 96, 128)


@pytest.mark.bad_input
@pytest.mark.parametrize('change,message', [
    ({'dataroot_gt': '/nonexistent/x'}, "dataroot_gt '/nonexistent/x' does not exist: make it as the option file's "
                                        'header says (python -m datasets_prep'),
    ({'sigma': 0}, 'sigma must lie in [1, 255]'),
    ({'sigma': 300}, 'sigma must lie in [1, 255]'),
    ({'sigma': 0.1}, 'sigma 0.1 is below 1 on the 0..255 pixel scale: give it in grey levels, e.g. 25'),
    ({'sigma': [0.05, 50], 'phase': 'train', 'gt_size': 8}, 'sigma [0.05, 50] is below 1'),
    ({'sigma_teacher': 0.05}, 'sigma_teacher 0.05 is below 1'),
    ({'noise_sed': 3}, "unknown option 'noise_sed' for AWGNDenoisingDataset (did you mean 'noise_seed'?)"),
    ({'dataroot_lq': '/x'}, "unknown option 'dataroot_lq' for AWGNDenoisingDataset (it adds the noise to "
                            "dataroot_gt itself: remove dataroot_lq)"),
    ({'flip': True}, "unknown option 'flip' for AWGNDenoisingDataset (did you mean 'use_hflip'?)"),
    ({'color': 'y'}, "unknown option 'color' for AWGNDenoisingDataset (its options: batch_size_per_gpu, channels"),
    ({'sigma': 'high'}, 'sigma must be a number or [low, high]'),
    ({'sigma': [30, 10], 'phase': 'train', 'gt_size': 8}, 'needs low <= high'),
    ({'sigma': [10, 30]}, 'for training only'),
    ({'channels': 2}, 'channels must be 1 (gray) or 3 (color)'),
    ({'sigma_teacher': 25}, 'sigma_teacher (25) must be lower than sigma'),
    ({'phase': 'train'}, 'gt_size (training crop size) must be a positive integer'),
    ({'io_backend': {'type': 'lmdb'}}, 'is not an LMDB'),
    ({'io_backend': {'type': 'http'}}, "io_backend type must be 'disk' or 'lmdb'"),
    ({'meta_info': '/nonexistent/meta.txt'}, "meta_info '/nonexistent/meta.txt' does not exist"),
    ({'noise_seed': -1}, 'noise_seed must be a non-negative integer'),
])
def test_bad_options_fail_before_any_read(folder, change, message):
    with pytest.raises(ValueError) as err:
        AWGNDenoisingDataset(opt(folder, **change))
    assert message in str(err.value)
    assert '\n' not in str(err.value)


@pytest.mark.bad_input
def test_image_smaller_than_gt_size_names_the_file_before_any_read(folder):
    with pytest.raises(ValueError, match=r"image '.*img1\.png' is 96x128, smaller than gt_size 100"):
        AWGNDenoisingDataset(opt(folder, phase='train', gt_size=100))


@pytest.mark.bad_input
def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match='no images found'):
        AWGNDenoisingDataset(opt(tmp_path))


def test_dataset_and_datasets_prep_list_the_same_images_in_any_case(tmp_path):
    from datasets_prep.common import list_images
    for name in ('a.PNG', 'b.png', 'c.Jpg'):
        cv2.imwrite(str(tmp_path / name), textured(16, 16, 3, 0))
    (tmp_path / 'notes.txt').write_text('not an image')
    listed = [p.rsplit('/', 1)[-1] for p in AWGNDenoisingDataset(opt(tmp_path)).paths]
    assert listed == list_images(str(tmp_path)) == ['a.PNG', 'b.png', 'c.Jpg']


def test_basicsr_train_on_awgn_dataset(tmp_path, folder, basicsr_cli):
    """Two real training iterations through BasicSR's train pipeline, with validation on the same dataset class."""
    yml = write_yml(tmp_path / 'train.yml', f"""
        name: awgn_train
        model_type: SRModel
        scale: 1
        num_gpu: 0
        manual_seed: 0
        datasets:
          train:
            name: tiny
            type: AWGNDenoisingDataset
            dataroot_gt: {folder}
            io_backend: {{type: disk}}
            channels: 1
            sigma: [15, 50]
            gt_size: 32
            use_hflip: true
            use_rot: true
            num_worker_per_gpu: 0
            batch_size_per_gpu: 2
            dataset_enlarge_ratio: 1
          val:
            name: tiny_val
            type: AWGNDenoisingDataset
            dataroot_gt: {folder}
            io_backend: {{type: disk}}
            channels: 1
            sigma: 25
            noise_seed: 0
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{pretrain_network_g: ~, strict_load_g: true, resume_state: ~}}
        train:
          optim_g: {{type: Adam, lr: !!float 1e-3}}
          scheduler: {{type: MultiStepLR, milestones: [10], gamma: 0.5}}
          total_iter: 2
          warmup_iter: -1
          pixel_opt: {{type: L1Loss, loss_weight: 1.0}}
        val:
          val_freq: 2
          save_img: false
          suffix: ~
          metrics:
            psnr: {{type: calculate_psnr, crop_border: 0, test_y_channel: false}}
        logger: {{print_freq: 1, save_checkpoint_freq: 2, use_tb_logger: false}}
        """)
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    assert (tmp_path / 'experiments' / 'awgn_train' / 'models' / 'net_g_latest.pth').is_file()
    psnr = float(re.search(r'# psnr: ([-\w.]+)', out).group(1))
    assert math.isfinite(psnr)


def test_basicsr_test_on_shared_set12(tmp_path, shared_dir, basicsr_cli):
    set12 = shared_dir / 'datasets' / 'test' / 'Set12'
    if not set12.is_dir():
        pytest.skip(f'{set12} not found')
    from mdrn_arch import MDRN
    torch.manual_seed(0)
    net = MDRN(1, 1, num_feat=8, num_block=1, num_level=2)
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    yml = write_yml(tmp_path / 'test.yml', f"""
        name: awgn_set12
        model_type: SRModel
        scale: 1
        num_gpu: 0
        manual_seed: 0
        datasets:
          test_1:
            name: Set12
            type: AWGNDenoisingDataset
            dataroot_gt: {set12}
            io_backend: {{type: disk}}
            channels: 1
            sigma: 25
            noise_seed: 0
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{pretrain_network_g: {tmp_path / 'net.pth'}, strict_load_g: true, param_key_g: params}}
        val:
          save_img: true
          suffix: ~
          metrics:
            psnr: {{type: calculate_psnr, crop_border: 0, test_y_channel: false}}
        """)
    out = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    psnr = float(re.search(r'# psnr: ([-\w.]+)', out).group(1))
    assert math.isfinite(psnr) and psnr > 5
    saved = sorted((tmp_path / 'results' / 'awgn_set12' / 'visualization' / 'Set12').glob('*.png'))
    assert len(saved) == 12


@pytest.mark.bad_input
def test_lmdb_without_meta_info_or_with_a_corrupt_value(tmp_path):
    """A value that is not a whole image (or a key meta_info lists but the LMDB lacks) is refused when the set is
    built, before any work; damage inside a whole-looking value is named at its first read."""
    import lmdb
    db = tmp_path / 'bad.lmdb'
    png = cv2.imencode('.png', textured(8, 8, 3, 0))[1].tobytes()
    values = {'img0': b'not an image', 'img1': png[:len(png) // 2], 'img2': png[:8] + b'x' * 40 + png[-12:],
              'img3': png}
    env = lmdb.open(str(db), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key.encode(), value)
    env.close()
    lmdb_opt = opt(str(db), io_backend={'type': 'lmdb'})
    with pytest.raises(ValueError, match=r"meta_info\.txt' is missing: rebuild the LMDB"):
        AWGNDenoisingDataset(lmdb_opt)
    for key in ('img0', 'img1'):
        (db / 'meta_info.txt').write_text(f'{key}.png (8,8,3) 1\n')
        with pytest.raises(ValueError, match=rf"'{key}' in LMDB .* is not a whole image .*datasets_prep\.verify"):
            AWGNDenoisingDataset(lmdb_opt)
    (db / 'meta_info.txt').write_text('img9.png (8,8,3) 1\n')
    with pytest.raises(ValueError, match=r"key 'img9' \(meta_info\) is not in LMDB"):
        AWGNDenoisingDataset(lmdb_opt)
    (db / 'meta_info.txt').write_text('img2.png (8,8,3) 1\nimg3.png (8,8,3) 1\n')
    ds = AWGNDenoisingDataset(lmdb_opt)
    assert ds[1]['gt'].shape == (3, 8, 8)
    with pytest.raises(ValueError, match=r"'img2' is not a decodable image.*datasets_prep\.verify"):
        ds[0]


def test_force_yml_examples_in_option_headers_name_existing_sections():
    """Every ``KEY:SUB=VALUE`` of a commented ``--force_yml`` example (and its ``\\`` continuation lines) names
    sections that the file has: BasicSR indexes each one, so a wrong name (val_1 in a test file) fails verbatim."""
    import yaml
    wrong, checked = [], 0
    for path in sorted((REPO / 'options').glob('*.yml')):
        text = path.read_text()
        opt, continued = yaml.safe_load(text), False
        for num, line in enumerate(text.splitlines(), 1):
            comment = line.strip()
            if not comment.startswith('#') or not ('--force_yml' in comment or continued):
                continued = False
                continue
            continued = comment.endswith('\\')
            for key_path in re.findall(r'(?:^|\s)(\w+(?::\w+)+)=', comment.split('--force_yml')[-1]):
                checked += 1
                node = opt
                for key in key_path.split(':')[:-1]:
                    if not isinstance(node, dict) or key not in node:
                        wrong.append(f'{path.name}:{num}: {key_path}')
                        break
                    node = node[key]
    assert checked and not wrong  # the headers do hold examples: a parser that finds none would pass vacuously


def test_preflight_keeps_the_quotes_of_a_message_and_drops_only_a_keyerror_repr(tmp_path, monkeypatch):
    from mdrn_models.integration import preflight
    cv2.imwrite(str(tmp_path / 'a.png'), textured(40, 40, 3, 0))
    (tmp_path / 'c.png').write_bytes(b'not a png')
    train = opt(tmp_path, phase='train', gt_size=32)
    with pytest.raises(OptionError) as err:
        preflight.check_datasets({'datasets': {'train': train}})
    message = str(err.value)  # the opening quote of the path is kept
    assert message.startswith(f"datasets.train: '{tmp_path / 'c.png'}' is not a readable image (")
    assert message.endswith('): replace or remove it.')

    class KeyErrorDataset:  # a dataset that fails with a KeyError: str() of it is the repr of its argument
        def __init__(self, ds_opt):
            raise KeyError("no key 'gt' in the lmdb")

    monkeypatch.setattr(preflight.DATASET_REGISTRY, 'get', lambda name: KeyErrorDataset)
    with pytest.raises(OptionError) as err:
        preflight.check_datasets({'datasets': {'val': train}})
    assert str(err.value) == "datasets.val: no key 'gt' in the lmdb"


@pytest.mark.bad_input
@pytest.mark.parametrize('damage', ['not an image', 'truncated'])
def test_an_unreadable_validation_image_is_refused_before_training(tmp_path, damage):
    """A validation set is checked in full when it is built (by the preflight), not at the first validation."""
    cv2.imwrite(str(tmp_path / 'a.png'), textured(40, 40, 3, 0))
    good = (tmp_path / 'a.png').read_bytes()
    (tmp_path / 'b.png').write_bytes(b'not a png' if damage == 'not an image' else good[:len(good) // 2])
    with pytest.raises(ValueError, match=re.escape(f"'{tmp_path / 'b.png'}' is not a readable image (")):
        AWGNDenoisingDataset(opt(tmp_path))
    (tmp_path / 'b.png').unlink()
    assert len(AWGNDenoisingDataset(opt(tmp_path))) == 1


@pytest.mark.bad_input
@pytest.mark.parametrize('phase', ['train', 'val'])
def test_a_file_listed_in_meta_info_but_missing_is_not_called_unreadable(tmp_path, phase):
    for name in ('a', 'b'):
        cv2.imwrite(str(tmp_path / f'{name}.png'), textured(40, 40, 3, 0))
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('a.png (40,40,3)\ngone.png (40,40,3)\nb.png (40,40,3)\n')
    with pytest.raises(ValueError) as err:
        AWGNDenoisingDataset(opt(tmp_path, phase=phase, gt_size=32, meta_info=str(meta)))
    assert str(err.value) == (
        f"'{tmp_path / 'gone.png'}' is listed in meta_info '{meta}' but missing: add the file or remove its line (or "
        'regenerate the set and its meta_info with python -m datasets_prep.testset / datasets_prep.demo --force).')
    meta.write_text('a.png\ngone.png\nalso_gone.png\n')
    with pytest.raises(ValueError, match=r"gone\.png' \(and 1 more\) is listed in meta_info"):
        AWGNDenoisingDataset(opt(tmp_path, phase=phase, gt_size=32, meta_info=str(meta)))


@pytest.mark.bad_input
@pytest.mark.parametrize('with_meta_info', [False, True])
def test_disk_backend_on_an_lmdb_says_to_set_the_lmdb_backend(tmp_path, with_meta_info):
    import lmdb
    db = tmp_path / 'train_sub.lmdb'
    env = lmdb.open(str(db), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b'img0', cv2.imencode('.png', textured(40, 40, 3, 0))[1].tobytes())
    env.close()
    (db / 'meta_info.txt').write_text('img0.png (40,40,3) 1\n')
    extra = {'meta_info': str(db / 'meta_info.txt')} if with_meta_info else {}
    with pytest.raises(ValueError) as err:
        AWGNDenoisingDataset(opt(db, phase='train', gt_size=32, **extra))
    assert str(err.value) == (f"dataroot_gt '{db}' looks like an LMDB (a '*.lmdb' folder or one with data.mdb), not "
                              'a folder of images: set io_backend: {type: lmdb}.')
    assert len(AWGNDenoisingDataset(opt(db, phase='train', gt_size=32, io_backend={'type': 'lmdb'}))) == 1


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.bad_input
@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_a_damaged_training_image_is_skipped_named_and_counted(tmp_path, backend, basicsr_log):
    """Damage the checks before training cannot see (a cut PNG or JPEG behind a whole header; a byte flipped in the
    middle of an LMDB value) is met at read time: the image is named in a warning, the next readable one taken, and
    the skip counted in the sample, so a run of days goes on."""
    import lmdb
    src = tmp_path / 'set'
    src.mkdir()
    for k in range(4):
        ext = '.jpg' if k == 2 else '.png'
        cv2.imwrite(str(src / f'img{k}{ext}'), textured(40, 40, 3, k))
    root, train_opt = src, opt(src, phase='train', gt_size=32)
    if backend == 'lmdb':
        root = tmp_path / 'set.lmdb'
        values = {f'img{k}': (src / f'img{k}.png').read_bytes() for k in (0, 1, 3)}
        env = lmdb.open(str(root), map_size=1 << 22)
        with env.begin(write=True) as txn:
            for key, value in values.items():
                txn.put(key.encode(), value)
        env.close()
        (root / 'meta_info.txt').write_text(''.join(f'{k}.png (40,40,3) 1\n' for k in values))
        train_opt = opt(str(root), phase='train', gt_size=32, io_backend={'type': 'lmdb'})
    ds = AWGNDenoisingDataset(train_opt)
    if backend == 'disk':
        _cut(src / 'img1.png')
        _cut(src / 'img2.jpg', 0.8)  # OpenCV would decode it into grey rows without a word
        damaged, good = ['img1.png', 'img2.jpg'], 'img3.png'
    else:
        mdb = root / 'data.mdb'
        data = bytearray(mdb.read_bytes())
        at = data.find(values['img1']) + len(values['img1']) // 2
        data[at] ^= 0xFF
        mdb.write_bytes(bytes(data))
        damaged, good = ['img1'], 'img3'
    sample = ds[1]
    assert sample['unreadable'] == len(damaged) and sample['gt_path'].endswith(good)
    warned = [r.getMessage() for r in basicsr_log.records if 'skipped unreadable training image' in r.getMessage()]
    assert len(warned) == len(damaged) and all(name in w for name, w in zip(damaged, warned)), warned
    assert ds[0]['unreadable'] == 0


@pytest.mark.bad_input
@pytest.mark.parametrize('damaged', ['one', 'all'])
def test_damaged_training_data_mid_run(tmp_path, damaged, request):
    """Through ``basicsr train`` (a loader worker process), images damaged after the checks: one of them is skipped
    at every read and the total reported when training ends; all of them (the folder replaced mid-run) stop the run
    in one line, and as no iteration has run yet the run's folders are put back as they were."""
    import unittest.mock
    from mdrn_models.integration import pipeline_fixes
    from mdrn_models.tools import pipelines
    src = tmp_path / 'set'
    src.mkdir()
    for k in range(3):
        cv2.imwrite(str(src / f'img{k}.png'), textured(40, 40, 1, k))
    yml = write_yml(tmp_path / 'train.yml', f"""
        name: damaged
        model_type: DenoiseModel
        scale: 1
        num_gpu: 0
        manual_seed: 0
        datasets:
          train: {{name: t, type: AWGNDenoisingDataset, dataroot_gt: {src}, channels: 1, sigma: 25, gt_size: 32,
                  num_worker_per_gpu: 1, batch_size_per_gpu: 1, dataset_enlarge_ratio: 1}}
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{}}
        train:
          optim_g: {{type: Adam, lr: !!float 1e-3}}
          scheduler: {{type: MultiStepLR, milestones: [10], gamma: 0.5}}
          total_iter: 6
          pixel_opt: {{type: L1Loss, loss_weight: 1.0}}
        logger: {{print_freq: 1, save_checkpoint_freq: 6, use_tb_logger: false}}
        """)
    real = pipeline_fixes._original_create_loaders

    def loaders_then_damage(*args):
        made = real(*args)
        for png in sorted(src.iterdir())[1:2] if damaged == 'one' else src.iterdir():  # after the header checks
            _cut(png)
        return made
    argv = ['-opt', str(yml), '--root', str(tmp_path)]
    with unittest.mock.patch.object(pipeline_fixes, '_original_create_loaders', loaders_then_damage):
        if damaged == 'one':
            pipelines.run('train', argv, str(tmp_path))
            assert (tmp_path / 'experiments' / 'damaged' / 'models' / 'net_g_6.pth').is_file()
            assert pipeline_fixes.SkipCountingLoader.skipped_reads == [2]  # 2 epochs of 3 images
            log = request.getfixturevalue('basicsr_log')  # (after the run: its set-up replaces the log handlers)
            pipeline_fixes.report_skipped_reads()
            assert log.messages[-1].startswith('2 training read(s) met an unreadable image'), log.messages
            return
        with pytest.raises(SystemExit) as exc:
            pipelines.run('train', argv, str(tmp_path))
    message = str(exc.value)
    assert message.startswith('error: datasets.train: 3 images in a row are unreadable') and '\n' not in message, \
        message
    assert 'still there?' in message and not (tmp_path / 'experiments').exists()


def test_the_counting_loader_draws_the_worker_seed_where_basicsr_does():
    """Making a DataLoader iterator draws its workers' base seed from torch's RNG; BasicSR's prefetchers make one on
    creation. The counting wrapper must make it at iter() too, or every run's noise draws would change."""
    from torch.utils.data import DataLoader
    from mdrn_models.integration.pipeline_fixes import SkipCountingLoader
    loader = DataLoader(list(range(4)), batch_size=2)
    torch.manual_seed(0)
    iter(loader)
    expected = torch.rand(1)
    torch.manual_seed(0)
    iter(SkipCountingLoader(loader))
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.bad_input
def test_two_validation_images_of_one_name_are_refused(tmp_path):
    """``a.png`` and ``a.jpg``: validation saves and reports each image by its name without extension."""
    for ext in ('.png', '.jpg'):
        cv2.imwrite(str(tmp_path / f'a{ext}'), np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"'a.jpg' and 'a.png' in '.*' share the name 'a', under which validation "
                                         'saves and reports each image: rename one'):
        AWGNDenoisingDataset({'phase': 'val', 'dataroot_gt': str(tmp_path), 'sigma': 25, 'channels': 1,
                              'io_backend': {'type': 'disk'}})
