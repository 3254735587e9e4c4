"""scripts/probe_states.py: per-frame state RMS of trained runs over whole clips, and its one-line errors."""
import json
import sys

import torch
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / 'scripts'))
import probe_states  # noqa: E402

NET = {'type': 'LRTIBasicVSR', 'num_feat': 8, 'num_block': 1, 'spynet_path': None}


def _run_dir(root, name, seed):
    """A scripts/reproduce.py run folder holding a random tiny network."""
    from basicsr.archs import build_network

    import lrti_plugin  # noqa: F401  (registers the archs)

    torch.manual_seed(seed)
    net = build_network(dict(NET))
    run = root / name
    (run / 'experiments' / name / 'models').mkdir(parents=True)
    torch.save({'params': net.state_dict()}, run / 'experiments' / name / 'models' / 'net_g_latest.pth')
    (run / 'train.yml').write_text(yaml.safe_dump({'name': name, 'network_g': NET}))
    return run


def test_probe_records_each_branch_state_rms_in_clip_order(tiny_data, tmp_path):
    """Frame 0's forward state and the last frame's backward state depend on that frame alone (each is where its
    branch starts), so they match a one-frame pass; the other frames do not. The RMS is sqrt(mean(x**2)); the
    per-frame Y-PSNR is the campaign runner's whole-pass score."""
    from reproduce_eval import evaluate

    runs = [_run_dir(tmp_path, 'a', 0), _run_dir(tmp_path, 'b', 1)]
    out = tmp_path / 'probe'
    assert probe_states.main([str(r) for r in runs] + ['--gt', str(tiny_data / 'heldout_png'),
                                                       '--out', str(out)]) == 0
    assert torch.is_grad_enabled()  # the probe must not switch autograd off for the rest of the process
    result = json.loads((out / 'states.json').read_text())
    assert list(result['runs']) == ['a', 'b'] and (out / 'states.png').stat().st_size > 0
    a = result['runs']['a']['clips']['chelsea']
    x, _ = probe_states.read_pair(str(tiny_data / 'heldout_png' / 'chelsea'))
    net = probe_states.build_net(NET, str(runs[0] / 'experiments' / 'a' / 'models' / 'net_g_latest.pth'))
    scored = evaluate(net, {'gt': str(tiny_data / 'heldout_png')})['clips']['chelsea']['per_frame']['psnr_y']
    assert a['psnr_y'] == scored and len(set(scored)) == 4
    assert len(a['rms']['forward']) == len(a['rms']['backward']) == x.shape[0] == 4
    (first, _), (last, _) = probe_states.probe_clip(net, x[:1]), probe_states.probe_clip(net, x[-1:])
    assert abs(a['rms']['forward'][0] - first['forward'][0]) < 1e-6
    assert abs(a['rms']['backward'][-1] - last['backward'][0]) < 1e-6
    assert abs(a['rms']['backward'][0] - first['backward'][0]) > 1e-4  # frame 0 backward has seen the whole clip
    with torch.no_grad():
        _, states = net(x.unsqueeze(0), return_states=True)
    f = states.feats['forward'][0, 2]
    assert abs(a['rms']['forward'][2] - float((f ** 2).mean().sqrt())) < 1e-6
    assert a['rms'] != result['runs']['b']['clips']['chelsea']['rms']  # each run its own weights

    before = (out / 'states.json').read_bytes()  # an earlier probe is not replaced without --force
    assert probe_states.main([str(runs[1]), '--gt', str(tiny_data / 'heldout_png'), '--out', str(out)]) == 1
    assert (out / 'states.json').read_bytes() == before
    assert probe_states.main([str(runs[1]), '--gt', str(tiny_data / 'heldout_png'), '--out', str(out), '--force']) == 0
    assert list(json.loads((out / 'states.json').read_text())['runs']) == ['b']


def test_probe_names_the_unfinished_run_and_writes_nothing(tiny_data, tmp_path, capsys):
    good = _run_dir(tmp_path, 'a', 0)
    bad = _run_dir(tmp_path, 'b', 1)
    (bad / 'experiments' / 'b' / 'models' / 'net_g_latest.pth').unlink()
    out = tmp_path / 'probe'
    assert probe_states.main([str(good), str(bad), '--gt', str(tiny_data / 'heldout_png'), '--out', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'net_g_latest.pth' in err[0] and '/b/' in err[0], err
    assert not out.exists()
    assert probe_states.main([str(tmp_path / 'nope'), '--gt', str(tiny_data / 'heldout_png'),
                              '--out', str(out)]) == 1
    assert 'no train.yml' in capsys.readouterr().err and not out.exists()


def test_probe_reads_a_training_options_file_with_basicsr_layout(tiny_data, tmp_path, monkeypatch):
    """An options file's weights are ./experiments/<name>/models/net_g_latest.pth (BasicSR's layout), the same
    network as the run folder that holds them gives the same states; two runs of one name are refused."""
    run = _run_dir(tmp_path, 'a', 0)
    monkeypatch.chdir(run)  # run/experiments/a/models/net_g_latest.pth
    opt = tmp_path / 'train_a.yml'
    opt.write_text(yaml.safe_dump({'name': 'a', 'network_g': NET}))
    gt = ['--gt', str(tiny_data / 'heldout_png')]
    assert probe_states.main([str(opt)] + gt + ['--out', str(tmp_path / 'p1')]) == 0
    assert probe_states.main([str(run)] + gt + ['--out', str(tmp_path / 'p2')]) == 0
    p1, p2 = (json.loads((tmp_path / p / 'states.json').read_text())['runs']['a'] for p in ('p1', 'p2'))
    assert p1['clips'] == p2['clips'] and p1['weights'] == p2['weights']
    assert probe_states.main([str(opt), str(run)] + gt + ['--out', str(tmp_path / 'p3')]) == 1
    assert not (tmp_path / 'p3').exists()


def test_probe_with_state_bounds_names_each_and_holds_the_states(tiny_data, tmp_path, capsys):
    """``--state-max-rms`` probes the run once per bound: a bound below the run's states holds every state at it,
    ``none`` is the network as trained; a bad bound is one line naming the option, before any work."""
    run = _run_dir(tmp_path, 'a', 0)
    gt = ['--gt', str(tiny_data / 'heldout_png')]
    plain, bounded = tmp_path / 'plain', tmp_path / 'bounded'
    assert probe_states.main([str(run)] + gt + ['--out', str(plain)]) == 0
    free = json.loads((plain / 'states.json').read_text())['runs']['a']['clips']['chelsea']
    low = min(min(v) for v in free['rms'].values()) / 2  # below every state of the run
    assert probe_states.main([str(run)] + gt + ['--out', str(bounded), '--state-max-rms', 'none', str(low)]) == 0
    runs = json.loads((bounded / 'states.json').read_text())['runs']
    assert list(runs) == ['a@rmsnone', f'a@rms{low}']
    assert runs['a@rmsnone']['clips']['chelsea'] == free
    held = runs[f'a@rms{low}']['clips']['chelsea']['rms']
    assert all(abs(v - low) < 1e-5 * low for vs in held.values() for v in vs)
    assert probe_states.main([str(run)] + gt + ['--out', str(tmp_path / 'bad'), '--state-max-rms', '0']) == 1
    assert '--state-max-rms' in capsys.readouterr().err and not (tmp_path / 'bad').exists()
