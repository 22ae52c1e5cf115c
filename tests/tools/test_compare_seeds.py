"""``basicsr compare-seeds``: paired differences pooled over training seeds, and the docs' tables regenerated from the
committed per-image scores (a number in a table that disagrees with its data fails here)."""
import csv
import math
import re

import numpy as np
import pytest
from scipy import stats

import mdrn_cli
from conftest import REPO
from mdrn_models.tools import compare_seeds

FIELDS = ('set', 'sigma', 'noise_seed', 'image', 'model', 'psnr', 'ssim')
DOCS = ('README.md', 'docs/distillation.md', 'weights/README.md')


def write_seed(folder, shifts, images=12, draws=(0,), seed=0):
    """A compare folder: 'plain' and one model per ``shifts`` entry (its PSNR shift over plain), on ``images``
    images of Set12 and BSD68 at sigma 25."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    with open(folder / 'per_image.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for set_name in ('Set12', 'BSD68'):
            for i in range(images):
                for draw in draws:
                    base = 28 + rng.normal()
                    w.writerow((set_name, '25', draw, f'{i:02d}.png', 'plain', f'{base:.6g}', '0.8'))
                    for name, shift in shifts.items():
                        psnr = base + shift + 0.01 * rng.normal()
                        w.writerow((set_name, '25', draw, f'{i:02d}.png', name, f'{psnr:.6g}', f'{0.8 + shift / 100:.6g}'))
    return folder


def test_the_seed_level_interval_is_students_t_over_the_per_seed_means(tmp_path):
    folders = [write_seed(tmp_path / f'seed{s}', {'kd': shift}, seed=s) for s, shift in ((1, 0.05), (2, 0.09), (3, 0.02))]
    runs = [(f.name, compare_seeds.read_scores(f)) for f in folders]
    per_seed, pooled = compare_seeds.pool(runs, 'plain', 'kd', ('BSD68', '25'))
    deltas = []
    for folder in folders:
        rows = list(csv.DictReader(open(folder / 'per_image.csv')))
        score = {(r['model'], r['image']): float(r['psnr']) for r in rows if r['set'] == 'BSD68'}
        deltas.append(np.mean([score['kd', i] - score['plain', i] for _, i in score if _ == 'plain']))
    assert [s['psnr']['delta'] for s in per_seed] == pytest.approx(deltas)
    mean, sem = np.mean(deltas), np.std(deltas, ddof=1) / math.sqrt(3)
    low, high = stats.t.interval(0.95, 2, loc=mean, scale=sem)
    assert pooled['psnr'] == pytest.approx((mean, low, high))
    assert all(s['psnr']['low'] < s['psnr']['delta'] < s['psnr']['high'] for s in per_seed)  # the image-level CIs


def test_verdicts_follow_the_interval_over_seeds(tmp_path):
    helps = [write_seed(tmp_path / 'h' / f's{s}', {'kd': 0.1 + 0.01 * s}, seed=s) for s in range(3)]
    mixed = [write_seed(tmp_path / 'm' / f's{s}', {'kd': shift}, seed=s) for s, shift in enumerate((0.2, -0.2, 0.05))]
    hurts = [write_seed(tmp_path / 'x' / f's{s}', {'kd': -0.3 - 0.02 * s}, seed=s) for s in range(3)]
    for folders, verdict in ((helps, 'helps'), (mixed, 'not shown'), (hurts, 'hurts'), (helps[:1], 'one seed: a hint')):
        table = compare_seeds.table(folders, 'plain')
        assert table.count(f'| {verdict} |') == 2, table  # Set12 and BSD68


def test_noise_draws_are_averaged_per_image_before_pooling(tmp_path):
    folder = write_seed(tmp_path / 's1', {'kd': 0.1}, draws=(0, 1, 2))
    scores = compare_seeds.read_scores(folder)
    assert len(scores['Set12', '25']['kd']) == 12  # one score per image, not per draw


@pytest.mark.bad_input
@pytest.mark.parametrize('case, message', [
    ('no_csv', "no per_image.csv: pass the --out folder of a 'basicsr compare' run"),
    ('unknown_model', "no model 'nope' on Set12 σ=25 (it has kd, plain)"),
    ('other_images', "'kd' and 'plain' were scored on different images of Set12"),
    ('no_baseline', 'give the compare folder of each seed and --baseline NAME'),
    ('other_csv', "is not a 'basicsr compare' per_image.csv"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, case, message):
    folder = tmp_path / 'seed1'
    argv = [str(folder), '--baseline', 'plain']
    if case == 'no_csv':
        folder.mkdir()
    else:
        write_seed(folder, {'kd': 0.1})
    if case == 'unknown_model':
        argv += ['--models', 'nope']
    elif case == 'other_images':
        text = (folder / 'per_image.csv').read_text()
        (folder / 'per_image.csv').write_text(text.replace('Set12,25,0,03.png,kd,', 'Set12,25,0,99.png,kd,'))
    elif case == 'no_baseline':
        argv = argv[:1]
    elif case == 'other_csv':
        (folder / 'per_image.csv').write_text('a,b\n1,2\n')
    with pytest.raises(SystemExit) as exc:
        mdrn_cli.main(['compare-seeds', *argv])  # the dispatcher, in this process
    assert isinstance(exc.value.code, str) and exc.value.code.startswith('basicsr compare-seeds: error: ')
    assert '\n' not in exc.value.code and message in exc.value.code, exc.value.code
    assert capsys.readouterr().out == ''


def test_update_rewrites_only_the_marked_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for s in (1, 2):
        write_seed(tmp_path / 'runs' / f'seed{s}', {'kd': 0.1 * s}, seed=s)
    doc = tmp_path / 'doc.md'
    doc.write_text('Intro.\n\n<!-- compare-seeds runs/seed1 runs/seed2 --baseline plain --sets BSD68 -->\n'
                   '| stale |\n<!-- /compare-seeds -->\n\nOutro.\n')
    assert compare_seeds.update(str(doc))
    text = doc.read_text()
    assert text.startswith('Intro.\n\n<!-- compare-seeds runs/seed1') and text.endswith('<!-- /compare-seeds -->\n\nOutro.\n')
    assert '| stale |' not in text and '| kd | BSD68 σ=25 | 2 |' in text and 'Set12' not in text
    assert not compare_seeds.update(str(doc))  # regenerated from the same data: unchanged
    brief = compare_seeds.table([str(tmp_path / 'runs' / 'seed1'), str(tmp_path / 'runs' / 'seed2')], 'plain',
                                brief=True)
    assert brief.splitlines()[0].count('|') == 6 and '| kd | BSD68 σ=25 | 2 |' in brief


@pytest.mark.parametrize('doc', DOCS)
def test_every_table_of_the_docs_matches_its_committed_data(doc, monkeypatch):
    """Each table between compare-seeds markers in the README, docs/distillation.md and the model card is what the
    committed per-image scores give (``basicsr compare-seeds --update`` writes them)."""
    monkeypatch.chdir(REPO)
    text = (REPO / doc).read_text()
    for match in compare_seeds.MARKER.finditer(text):
        assert match.group(3) == compare_seeds.marked_table(match.group(2)), \
            f'{doc}: the table after <!-- compare-seeds {match.group(2)} --> disagrees with its data: run ' \
            f'basicsr compare-seeds --update {doc}'
    if doc == 'docs/distillation.md':
        assert len(re.findall('<!-- compare-seeds ', text)) >= 3


def test_the_weight_choice_table_matches_the_training_logs():
    """docs/distillation.md's held-out PSNRs of the seed-10 runs are those in their committed training logs, and the
    HMDS weights used for seeds 11-13 are the best of their rows (chosen on these logs)."""
    import gzip
    text = (REPO / 'docs' / 'distillation.md').read_text()
    rows = re.findall(r'\| ([^|]+) \| `([\w.]+_s10)` \| ([^|]+) \| ([0-9.]+) \|([^|]*)\|', text)
    assert len(rows) >= 11
    for strategy, run, weight, psnr, used in rows:
        log = gzip.open(REPO / 'docs' / 'kd_results' / 'logs' / f'{run}.log.gz', 'rt').read()
        logged = float(re.search(r'Validation Train400_holdout\s+# psnr: ([0-9.]+)', log).group(1))
        assert f'{logged:.2f}' == psnr, (run, logged, psnr)
    for strategy in ('HMDS-DnCNN', 'HMDS-MDRN'):
        mine = [(float(p), used.strip() == 'yes') for s, _, _, p, used in rows if s == strategy]
        assert max(mine)[1], f'{strategy}: the weight used is not the best on the held-out images'
