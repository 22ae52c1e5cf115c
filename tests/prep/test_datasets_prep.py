"""datasets_prep commands: sub-images + LMDB round trip, verify, test-set preparation with fixed noisy copies, the
scikit-image demo set, --help and refusal to overwrite without --force."""
import gc
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mdrn_models  # noqa: F401
from basicsr.utils import tensor2img
from conftest import REPO
from datasets_prep import demo, div2k, testset, verify
from datasets_prep.common import PrepError
from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset


def random_images(folder, sizes, channels=3, seed=0, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, (h, w) in enumerate(sizes):
        shape = (h, w) if channels == 1 else (h, w, channels)
        name = names[k] if names else f'{k:04d}.png'
        cv2.imwrite(str(folder / name), rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


@pytest.mark.parametrize('size,expected', [
    (2040, [0, 240, 480, 720, 960, 1200, 1440, 1560]),  # DIV2K width: 8 columns
    (1356, [0, 240, 480, 720, 876]),  # a common DIV2K height: 5 rows -> 40 sub-images (0001 in BasicSR's list)
    (960, [0, 240, 480]),  # flush with the border: nothing left over
    (480, [0]),
    (100, [0]),  # smaller than the crop: kept whole
])
def test_crop_starts_follow_basicsr_extract_subimages(size, expected):
    assert div2k.crop_starts(size, 480, 240, 0) == expected
    assert div2k.crop_starts(1356, 480, 240, 200) == [0, 240, 480, 720]  # 156 px left <= thresh_size


def test_div2k_subimages_lmdb_round_trip_and_verify(tmp_path, capsys):
    src = random_images(tmp_path / 'HR', [(100, 130), (64, 64), (90, 70)])
    assert div2k.main(['--input', str(src), '--out', str(tmp_path / 'out'), '--crop-size', '64', '--step', '32',
                       '--n-thread', '1']) == 0
    sub, lmdb_path = tmp_path / 'out' / 'HR_sub', tmp_path / 'out' / 'HR_sub.lmdb'
    names = sorted(p.name for p in sub.glob('*.png'))
    # 100x130: rows 0,32,36 x cols 0,32,64,66 -> 12; 64x64: 1; 90x70: rows 0,26 x cols 0,6 -> 4
    assert len(names) == 12 + 1 + 4
    assert (lmdb_path / 'data.mdb').is_file()
    meta = (lmdb_path / 'meta_info.txt').read_text().split('\n')
    assert meta[0] == '0000_s001.png (64,64,3) 1'
    # the first sub-image is the top-left crop of the source
    src0 = cv2.imread(str(src / '0000.png'))
    assert np.array_equal(cv2.imread(str(sub / '0000_s001.png')), src0[:64, :64])
    assert np.array_equal(cv2.imread(str(sub / '0000_s012.png')), src0[36:100, 66:130])

    # verify: clean report, exit 0
    assert verify.main([str(lmdb_path)]) == 0
    assert '17 entries, meta_info: 17 keys' in capsys.readouterr().out

    # the dataset reads the same pixels from the LMDB as from the folder
    common = {'phase': 'val', 'channels': 3, 'sigma': 25, 'noise_seed': 3}
    from_lmdb = AWGNDenoisingDataset({**common, 'dataroot_gt': str(lmdb_path), 'io_backend': {'type': 'lmdb'}})
    from_disk = AWGNDenoisingDataset({**common, 'dataroot_gt': str(sub), 'io_backend': {'type': 'disk'}})
    assert len(from_lmdb) == len(from_disk) == 17
    for k in (0, 5, 16):
        a, b = from_lmdb[k], from_disk[k]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
        assert a['gt_path'] == Path(b['gt_path']).stem
    del from_lmdb, a  # py-lmdb allows one open environment per path and process: close it (GC) first
    gc.collect()
    train = AWGNDenoisingDataset({**common, 'phase': 'train', 'gt_size': 48, 'dataroot_gt': str(lmdb_path),
                                  'io_backend': {'type': 'lmdb'}})
    assert train[3]['lq'].shape == (3, 48, 48)
    del train
    gc.collect()

    # refuses to overwrite without --force (before doing anything), replaces with it
    with pytest.raises(PrepError, match='already exists: pass --force'):
        div2k.main(['--input', str(src), '--out', str(tmp_path / 'out'), '--crop-size', '64', '--step', '32'])
    assert div2k.main(['--input', str(src), '--out', str(tmp_path / 'out'), '--crop-size', '64', '--step', '64',
                       '--n-thread', '2', '--force']) == 0
    assert len(list(sub.glob('*.png'))) == 6 + 1 + 4
    assert verify.main([str(lmdb_path)]) == 0


@pytest.mark.bad_input
def test_verify_reports_problems_with_nonzero_exit(tmp_path, capsys):
    src = random_images(tmp_path / 'HR', [(64, 64), (64, 64)], channels=1)
    assert div2k.main(['--input', str(src), '--out', str(tmp_path), '--crop-size', '64', '--n-thread', '1']) == 0
    lmdb_path = tmp_path / 'HR_sub.lmdb'
    meta = lmdb_path / 'meta_info.txt'
    text = meta.read_text()
    assert '(64,64,1)' in text
    meta.write_text(text + 'ghost_s001.png (64,64,1) 1\n')
    capsys.readouterr()
    assert verify.main([str(lmdb_path)]) == 1
    out = capsys.readouterr().out
    assert "1 meta_info keys are not in the LMDB (first: ghost_s001)" in out and 'FAILED' in out
    # a corrupt value is reported as undecodable
    import lmdb
    meta.write_text(text)
    env = lmdb.open(str(lmdb_path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b'0000_s001', b'not a png')
    env.close()
    assert verify.main([str(lmdb_path)]) == 1
    assert 'not decodable images (first: 0000_s001)' in capsys.readouterr().out
    with pytest.raises(PrepError, match='is not an LMDB folder'):
        verify.main([str(tmp_path / 'HR')])


@pytest.mark.bad_input
def test_lmdb_refuses_names_with_dots(tmp_path):
    from datasets_prep.common import make_lmdb
    src = random_images(tmp_path / 'in', [(16, 16)], names=['a.b.png'])
    with pytest.raises(PrepError, match="names with dots or spaces"):
        make_lmdb(str(src), ['a.b.png'], str(tmp_path / 'x.lmdb'), force=False)
    assert not (tmp_path / 'x.lmdb').exists()


def test_testset_clean_copy_and_noisy_pngs_match_the_dataset(tmp_path, capsys):
    src = random_images(tmp_path / 'raw', [(40, 50), (33, 31), (20, 24)], names=['b.png', 'a.v2.jpg.png', 'c.bmp'])
    out = tmp_path / 'datasets' / 'test' / 'Tiny'
    assert testset.main(['--input', str(src), '--out', str(out), '--channels', '1', '--noisy', '25', '50',
                         '--noise-seed', '7']) == 0
    assert 'renamed 1 images' in capsys.readouterr().out
    clean = sorted(p.name for p in out.glob('*.png'))
    assert clean == ['a_v2_jpg.png', 'b.png', 'c.png']
    assert cv2.imread(str(out / 'b.png'), cv2.IMREAD_UNCHANGED).ndim == 2
    assert (out / 'meta_info.txt').read_text().splitlines()[1] == 'b.png (40,50,1)'
    for sigma in (25, 50):
        ds = AWGNDenoisingDataset({'phase': 'test', 'dataroot_gt': str(out), 'io_backend': {'type': 'disk'},
                                   'channels': 1, 'sigma': sigma, 'noise_seed': 7})
        noisy_dir = tmp_path / 'datasets' / 'test' / 'Tiny_noisy' / f'sigma{sigma}'
        for k in range(len(ds)):
            item = ds[k]
            png = cv2.imread(str(noisy_dir / Path(item['gt_path']).name), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(png, tensor2img(item['lq'], min_max=(0, 1)))
            err = png.astype(float) - cv2.imread(str(out / Path(item['gt_path']).name), 0)
            assert 0.6 * sigma < err.std() < 1.1 * sigma  # clipping lowers it a little
    with pytest.raises(PrepError, match='already exists: pass --force'):
        testset.main(['--input', str(src), '--out', str(out)])
    with pytest.raises(PrepError, match=r'must lie in \[1, 255\]'):
        testset.main(['--input', str(src), '--out', str(tmp_path / 'o2'), '--noisy', '0'])
    with pytest.raises(PrepError, match="input folder '.*nope' does not exist"):
        testset.main(['--input', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o3')])
    assert not (tmp_path / 'o2').exists() and not (tmp_path / 'o3').exists()


def test_demo_set_from_bundled_scikit_image(tmp_path):
    out = tmp_path / 'demo'
    assert demo.main(['--out', str(out)]) == 0
    train = sorted(p.name for p in (out / 'train').glob('*.png'))
    val = sorted(p.name for p in (out / 'val').glob('*.png'))
    assert len(train) == len(demo.TRAIN) and len(val) == len(demo.VAL)
    for p in (out / 'train').glob('*.png'):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 3 and max(img.shape[:2]) <= 512 and min(img.shape[:2]) >= 64
    for p in (out / 'val').glob('*.png'):
        assert max(cv2.imread(str(p)).shape[:2]) <= 256
    # readable by the dataset in both gray and color, for training crops and validation
    for channels in (1, 3):
        ds = AWGNDenoisingDataset({'phase': 'train', 'dataroot_gt': str(out / 'train'), 'channels': channels,
                                   'sigma': 25, 'gt_size': 48, 'io_backend': {'type': 'disk'}})
        assert all(ds[k]['lq'].shape == (channels, 48, 48) for k in range(len(ds)))
    with pytest.raises(PrepError, match='already exists: pass --force'):
        demo.main(['--out', str(out)])
    assert demo.main(['--out', str(out), '--force']) == 0


@pytest.mark.bad_input
@pytest.mark.parametrize('module', ['div2k', 'testset', 'demo', 'verify'])
def test_commands_have_help_and_one_line_errors(module, tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    run = subprocess.run([sys.executable, '-m', f'datasets_prep.{module}', '--help'], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and 'usage: python -m datasets_prep.' in run.stdout
    if module == 'verify':
        args = [str(tmp_path / 'missing.lmdb')]
    elif module == 'demo':
        (tmp_path / 'demo').mkdir()
        args = ['--out', str(tmp_path / 'demo')]
    else:
        args = ['--input', str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]
    run = subprocess.run([sys.executable, '-m', f'datasets_prep.{module}', *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')


@pytest.mark.bad_input
@pytest.mark.parametrize('command, args, message', [
    (testset, ['--noisy', '25', '0.5'], 'below 1 on the 0..255 pixel scale'),  # the dataset's range, up front
    (testset, ['--noisy', 'nan'], r'must lie in \[1, 255\]'),
    (testset, ['--noisy', '300'], r'must lie in \[1, 255\]'),
    (testset, ['--noisy', '25', '50', '25.0'], r'--noisy lists a sigma twice \(sigma25\): give each sigma once'),
    (div2k, ['--compress-level', '12'], r'PNG compression level from 0 \(none, fastest\) to 9 \(smallest\), got 12'),
    (div2k, ['--compress-level', '-1'], 'PNG compression level from 0'),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, command, args, message):
    src = random_images(tmp_path / 'src', [(32, 32)])
    with pytest.raises(PrepError, match=message):
        command.main(['--input', str(src), '--out', str(tmp_path / 'out'), *args])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']


def test_undecodable_image_of_a_disk_dataset_is_named_not_sent_to_verify(tmp_path):
    src = random_images(tmp_path / 'set', [(16, 16), (16, 16)])
    ds = AWGNDenoisingDataset({'phase': 'test', 'dataroot_gt': str(src), 'io_backend': {'type': 'disk'},
                               'channels': 3, 'sigma': 25})
    (src / '0001.png').write_bytes(b'not an image')  # after the set was checked (a file replaced mid-run)
    with pytest.raises(ValueError, match=r"0001\.png' is not a decodable image: remove or replace that file$"):
        ds[1]  # verify reads LMDBs only, so it is no advice for a folder


@pytest.mark.bad_input
@pytest.mark.parametrize('command,args', [
    (testset, ['--out', '{parent}']),  # the output would contain the input: --force would delete it
    (testset, ['--out', '{src}']),
    (testset, ['--out', '{src}/clean']),  # inside the input
    (testset, ['--out', '{parent}/clean', '--noisy', '25', '--noisy-out', '{src}']),  # noisy sets inside the input
    (div2k, ['--out', '{parent}', '--name', 'src']),  # sub-image folder == input
])
def test_outputs_overlapping_the_input_are_refused_even_with_force(tmp_path, command, args):
    parent = tmp_path / 'parent'
    src = random_images(parent / 'src', [(32, 32)])
    before = sorted(p.name for p in src.iterdir())
    argv = ['--input', str(src), *(a.format(parent=parent, src=src) for a in args), '--force']
    with pytest.raises(PrepError, match='overlaps the input folder'):
        command.main(argv)
    assert sorted(p.name for p in src.iterdir()) == before


def _bytes_under(root):
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(root.rglob('*'))}


@pytest.mark.bad_input
@pytest.mark.parametrize('force', [False, True])
def test_force_never_replaces_a_folder_the_tools_did_not_make(tmp_path, force):
    """``--name userstuff`` where the user keeps files: one line with or without ``--force``, the folder kept byte
    for byte (``--force`` replaces only outputs carrying the tools' marker, or an empty folder)."""
    src = random_images(tmp_path / 'HR', [(64, 64)])
    (tmp_path / 'out' / 'userstuff').mkdir(parents=True)
    (tmp_path / 'out' / 'userstuff' / 'thesis.tex').write_text('months of work')
    before = _bytes_under(tmp_path)
    with pytest.raises(PrepError, match=r"output '.*userstuff' exists and was not made by datasets_prep \(it holds no "
                                        r'\.datasets_prep file\): ' + ('--force only replaces outputs these tools '
                                                                       'made; ' if force else '') + 'move it away'):
        div2k.main(['--input', str(src), '--out', str(tmp_path / 'out'), '--name', 'userstuff', '--n-thread', '1',
                    *(['--force'] if force else [])])
    assert _bytes_under(tmp_path) == before


@pytest.mark.bad_input
def test_an_lmdb_build_stopped_half_way_is_named_incomplete(tmp_path, monkeypatch):
    """A preparation killed while writing its LMDB leaves an output marked incomplete: the rerun says so (not just
    "exists"), and ``--force`` rebuilds it."""
    import basicsr.utils.lmdb_util as lmdb_util
    src = random_images(tmp_path / 'HR', [(64, 64), (64, 64)])
    argv = ['--input', str(src), '--out', str(tmp_path / 'out'), '--n-thread', '1']
    real = lmdb_util.make_lmdb_from_imgs

    def killed(folder, lmdb_path, *args, **kwargs):
        os.makedirs(lmdb_path)
        (Path(lmdb_path) / 'data.mdb').write_bytes(b'half')
        raise KeyboardInterrupt
    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', killed)
    with pytest.raises(KeyboardInterrupt):
        div2k.main(argv)
    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', real)
    with pytest.raises(PrepError, match=r"output '.*HR_sub.lmdb' is incomplete: an earlier run \(started .*\) stopped "
                                        'before finishing it; pass --force to rebuild it'):
        div2k.main(argv)
    assert div2k.main([*argv, '--force']) == 0
    assert verify.main([str(tmp_path / 'out' / 'HR_sub.lmdb')]) == 0


@pytest.mark.bad_input
def test_an_enormous_image_and_what_the_machine_refuses_are_one_line(tmp_path, capsys):
    from conftest import declared_png
    from datasets_prep.common import run_main
    src = random_images(tmp_path / 'in', [(16, 16)])
    declared_png(src / 'bomb.png', 30000, 30000)
    with pytest.raises(PrepError, match=r'bomb.png declares 30000x30000 pixels \(900 MP\), more than the 100 MP .*: '
                                        'crop or downscale it first$'):
        testset.main(['--input', str(src), '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()

    def full_disk(argv):
        raise OSError(28, 'No space left on device', str(tmp_path / 'out' / 'x.png'))
    with pytest.raises(SystemExit) as exc:
        run_main(full_disk)
    assert exc.value.code == 2 and capsys.readouterr().err == (
        f"error: {tmp_path / 'out' / 'x.png'}: No space left on device: fix the path or free space, then rerun "
        '(--force replaces an output left incomplete)\n')
