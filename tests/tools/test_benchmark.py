"""The benchmark script (latency, peak memory, GMAC/s, op breakdown, training step), on tiny sizes: what each mode
measures, not how fast it is."""
import pytest
import torch

from mdrn_arch import MDRN, DnCNN


def test_benchmark_runs_and_reports(tmp_path, capsys):
    from mdrn_models.tools import benchmark
    out = tmp_path / 'bench.md'
    assert benchmark.main(['--sizes', '32', '--models', 'DnCNN', 'MDRN-2B', 'MDRN-2B-unfused', '--repeats', '1',
                           '--modes', 'fp32', 'channels_last', 'amp', '--out', str(out)]) == 0
    text = out.read_text()
    rows = [line.split('|') for line in text.splitlines() if line.startswith('| MDRN-2B | 0.768')]
    assert [cells[4].strip() for cells in rows] == ['fp32', 'channels_last', 'amp']
    assert 'amp: autocast to bfloat16.' in text  # amp on the CPU: bf16
    for cells in rows:
        # MACs/pixel from the flop counter (MDRN-2B ~0.33M, the paper-size net), GMAC/s finite and positive
        assert 300 < float(cells[3]) < 360 and float(cells[8]) > 0 and float(cells[9]) > 0
    with pytest.raises(SystemExit):
        benchmark.main(['--sizes', '32', '--models', 'DnCNN', '--out', str(out)])
    assert '--force' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark.main(['--sizes', '32', '--models', 'DnCNN-unfused'])
    assert 'only MDRN models have the -unfused variant' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark.main(['--sizes', '32', '--models', 'DnCNN', '--modes', 'compile', '--device', 'cpu'])
    assert 'mode compile is for --device cuda' in capsys.readouterr().err


def test_benchmark_takes_any_option_file_or_checkpoint(tmp_path, capsys, monkeypatch):
    """NAME=PATH benchmarks the network of an option file (here a SwinIR, padded to its window: 32 is no multiple
    of 7) or a checkpoint (a color DnCNN: a 3-channel input), under its name."""
    from mdrn_models.tools import benchmark
    (tmp_path / 'swinir.yml').write_text('network_g: {type: SwinIR, in_chans: 1, embed_dim: 6, depths: [1], '
                                         'num_heads: [1], mlp_ratio: 1, upscale: 1, upsampler: ""}\n')
    torch.save({'params': DnCNN(3, 3, num_feat=4, num_conv=3).state_dict()}, tmp_path / 'color.pth')
    # the measured rows, unrounded: the table prints MAC/px in thousands and GMAC/s to 0.1, both 0 for these nets
    measured, bench_inference = [], benchmark.bench_inference
    monkeypatch.setattr(benchmark, 'bench_inference',
                        lambda *a, **kw: measured.extend(bench_inference(*a, **kw)) or measured)
    assert benchmark.main(['--sizes', '32', '--models', 'DnCNN', f'Swin={tmp_path / "swinir.yml"}',
                           f'Color={tmp_path / "color.pth"}', '--modes', 'fp32', 'channels_last', '--repeats', '1',
                           '--breakdown']) == 0
    text = capsys.readouterr().out
    rows = {(r['model'], r['mode']): r for r in measured}
    for name in ('Swin', 'Color'):
        for mode in ('fp32', 'channels_last'):
            assert rows[name, mode]['macs'] > 0 and rows[name, mode]['lat'] > 0
            assert f'| {name} | {mode} |' in text  # its row of the relative table
    # the color DnCNN's MACs: 3->4, 4->4, 4->3 3x3 convs per pixel
    assert rows['Color', 'fp32']['macs'] == (3 * 4 + 4 * 4 + 4 * 3) * 9 * 32 * 32
    with pytest.raises(SystemExit):
        benchmark.main(['--sizes', '32', '--models', f'X={tmp_path / "missing.yml"}'])
    assert 'missing.yml' in capsys.readouterr().err


def test_benchmark_breakdown_counts_every_mac_of_fused_and_plain_paths(capsys):
    """The per-op breakdown sees every conv, the fused oneDNN calls included: its MACs add up to the flop counter's
    (which counts the plain path), for the fused and the unfused forward alike."""
    from mdrn_models.tools import benchmark
    cpu = torch.device('cpu')
    names = ['DnCNN', 'MDRN-2B', 'MDRN-2B-unfused']
    groups = benchmark.bench_breakdown(names, [32], cpu, log=lambda msg: None)
    for name in names:
        assert sum(g[2] for g in groups[name, 32].values()) == benchmark.count_macs(benchmark.build(name), 32, cpu)
    assert '1×1 conv 32→64 +add in place' in groups['MDRN-2B', 32]  # the fused path ran, and was counted
    assert not any('+' in kind for kind in groups['MDRN-2B-unfused', 32])
    assert set(groups['DnCNN', 32]) == {'3×3 conv 1→64', '3×3 conv 64→64', '3×3 conv 64→1', 'other ops'}
    assert benchmark.main(['--sizes', '32', '--models', 'MDRN-2B', '--modes', 'fp32', '--repeats', '1',
                           '--breakdown']) == 0
    text = capsys.readouterr().out
    assert '| MDRN-2B | 32² | 3×3 conv 32→32 d2 +relu | 20 |' in text and '| MDRN-2B | 32² | total |' in text


@pytest.mark.parametrize('argv, message', [
    (['--repeats', '0'], '--repeats must be >= 1'),
    (['--threads', '-1'], '--threads must be >= 1'),
    (['--threads', '0'], '--threads must be >= 1'),
    (['--train-only', '--train-size', '0'], '--train-size must be >= 8'),
    (['--train-only', '--train-batch', '0'], '--train-batch must be >= 1'),
    (['--out', '{tmp}/missing/b.md'], 'does not exist; create it'),
    (['--out', '{tmp}', '--force'], 'is a folder: give a file name'),
    (['--models', 'DnCNN', 'DnCNN'], '--models lists DnCNN twice'),
    (['--sizes', '32', '32'], '--sizes lists 32 twice'),
])
def test_benchmark_bad_input_is_one_line_error_before_any_run(tmp_path, capsys, monkeypatch, argv, message):
    from mdrn_models.tools import benchmark

    def never(*args):
        raise AssertionError('measured before refusing the options')
    monkeypatch.setattr(benchmark, 'bench_inference', never)
    monkeypatch.setattr(benchmark, 'bench_train', never)
    with pytest.raises(SystemExit) as err:
        benchmark.main(['--sizes', '32', '--models', 'DnCNN'] + [a.format(tmp=tmp_path) for a in argv])
    msg = capsys.readouterr().err.strip()
    assert err.value.code == 2 and message in msg and '\n' not in msg


def test_benchmark_train_only_times_real_steps_and_reports_them(capsys, monkeypatch):
    """--train-only runs one real step of plain, HADS and HMDS per round (BasicSR's build_model, tiny crops), with
    --repeats rounds after a warm-up; its report describes no inference measurement."""
    from mdrn_models.tools import benchmark
    measured = []
    real = benchmark.bench_train
    monkeypatch.setattr(benchmark, 'bench_train', lambda *a, **kw: measured.append(real(*a, **kw)) or measured[-1])
    assert benchmark.main(['--train-only', '--repeats', '2', '--train-batch', '1', '--train-size', '8']) == 0
    captured = capsys.readouterr()
    assert 'train step round 3/3 done' in captured.err  # the warm-up round, then 2 timed ones
    (results,) = measured
    assert set(results) == {'plain', 'HADS', 'HMDS'}
    assert all(0 < best <= median for best, median in results.values())
    assert '| HMDS |' in captured.out and 'no_grad' not in captured.out and 'Latency' not in captured.out


def test_benchmark_relative_table_needs_dncnn():
    from argparse import Namespace
    from mdrn_models.tools import benchmark_report
    row = {'model': 'MDRN-2B', 'mode': 'fp32', 'size': 32, 'macs': 1e6, 'peak': 0, 'params': 1, 'lat': 1e-3,
           'median': 1e-3, 'n': 1}
    args = Namespace(malloc='default malloc', modes=['fp32'], sizes=[32], models=['MDRN-2B'])
    text = benchmark_report.report([row], None, torch.device('cpu'), args)
    assert 'relative to DnCNN (same' not in text and 'add DnCNN to --models' in text
    args.models = ['DnCNN', 'MDRN-2B']
    text = benchmark_report.report([row | {'model': 'DnCNN', 'macs': 2e6}, row], None, torch.device('cpu'), args)
    assert '| MDRN-2B | fp32 | 0.50× |' in text


def test_benchmark_out_holds_each_finished_size_before_the_next_starts(tmp_path, monkeypatch):
    """A benchmark stopped part-way (a GPU session's step out of time) keeps the sizes it finished in --out."""
    from mdrn_models.tools import benchmark
    out, seen = tmp_path / 'bench.md', []
    prepare = benchmark.prepare

    def watching(net, mode, device):  # called as each size starts: what --out holds by then
        seen.append(out.read_text() if out.exists() else '')
        return prepare(net, mode, device)
    monkeypatch.setattr(benchmark, 'prepare', watching)
    benchmark.main(['--sizes', '16', '24', '--models', 'DnCNN', '--modes', 'fp32', '--repeats', '1', '--out', str(out)])
    assert seen[0] == '' and '16²' in seen[1]  # the 16² rows were written before the 24² ones were measured
    assert out.read_text() != seen[1] and '24²' in out.read_text()
