"""scripts/reproduce.py end to end: a tiny 2-arm campaign killed mid-run resumes where it stopped."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest
import yaml
from conftest import REPO, tiny_options, to_lrti

from lrti_plugin.data.lmdb_tools import bicubic_downscale
from lrti_plugin.utils.options import dump_options

SCRIPT = REPO / 'scripts' / 'reproduce.py'
sys.path.insert(0, str(REPO / 'scripts'))
import reproduce  # noqa: E402
import reproduce_runs  # noqa: E402

ITERS = 8


def _test_set(tiny_data, root):
    """LR/GT folders of the tiny held-out clip (whole clip, x4 MATLAB bicubic)."""
    src = tiny_data / 'heldout_png' / 'chelsea'
    for kind in ('GT', 'LR'):
        (root / kind / 'chelsea').mkdir(parents=True)
    for f in sorted(os.listdir(src)):
        img = cv2.imread(str(src / f))
        cv2.imwrite(str(root / 'GT' / 'chelsea' / f), img)
        cv2.imwrite(str(root / 'LR' / 'chelsea' / f), bicubic_downscale(img, 4))
    return root


def _campaign(tiny_data, tmp_path):
    opt = tiny_options(tiny_data, 'base', {'train.total_iter': ITERS, 'train.scheduler.periods': [ITERS],
                                           'logger.save_checkpoint_freq': 2, 'val.val_freq': 4})
    to_lrti(opt, long_frames=6, clip_frames=3, num_clips=2)  # base = the LRTI arm
    base = dump_options(opt, str(tmp_path / 'base.yml'))
    tests = _test_set(tiny_data, tmp_path / 'testset')
    plain_drop = ['train.lrti', 'datasets.train.long_frames', 'datasets.train.clip_frames', 'datasets.train.num_clips']
    camp = {'name': 'tiny', 'base': base, 'seeds': [3],
            'reference': 'bicubic',
            'test': {'tiny': {'lq': str(tests / 'LR'), 'gt': str(tests / 'GT')},
                     'tiny_made_lr': {'gt': str(tests / 'GT')},  # the runner makes the same x4 LR
                     'tiny_chunks': {'lq': str(tests / 'LR'), 'gt': str(tests / 'GT'), 'chunk': 2}},
            'arms': {'plain': {'drop': plain_drop, 'set': {'datasets.train.type': 'LRTIRecurrentDataset',
                                                           'datasets.train.clip_frames': 3,
                                                           'datasets.train.batch_size_per_gpu': 2}},
                     'lrti': {'label': 'LRTI'}}}
    path = tmp_path / 'campaign.yml'
    path.write_text(yaml.safe_dump(camp, sort_keys=False))
    return path


def _start(camp, out, cwd):
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(camp), '--out', str(out)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_campaign_killed_mid_run_resumes_and_reports(tiny_data, tmp_path):
    camp, out = _campaign(tiny_data, tmp_path), tmp_path / 'out'
    proc = _start(camp, out, tmp_path)
    state = out / 'lrti_s3' / 'experiments' / 'lrti_s3' / 'training_states' / '2.state'
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), f'the second arm never saved a state: {proc.communicate()[0][-2000:]}'
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its training child, mid-run
    proc.wait()
    assert not (out / 'lrti_s3' / 'experiments' / 'lrti_s3' / 'models' / 'net_g_latest.pth').exists(), \
        'killed too late: the run had finished'
    plain_eval = out / 'plain_s3' / 'eval_tiny.json'
    assert plain_eval.exists()
    plain_mtime = plain_eval.stat().st_mtime

    proc = _start(camp, out, tmp_path)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    runs = json.loads((out / 'campaign.json').read_text())['runs']
    assert len(runs['plain_s3']['segments']) == 1, 'a finished arm was trained again'
    assert plain_eval.stat().st_mtime == plain_mtime, 'a finished evaluation was redone'
    resumed = runs['lrti_s3']['segments'][-1]
    assert resumed['start_iter'] >= 2 and resumed['exit'] == 0, resumed  # BasicSR resumed from a saved state
    assert resumed['peak_rss_mib'] > 50 and resumed['rss_method'] == 'VmHWM' and resumed['wall_s'] > 0

    report = json.loads((out / 'report.json').read_text())
    assert set(report['arms']) == {'plain', 'lrti'}
    for arm in ('plain', 'lrti'):
        seed = report['arms'][arm]['seeds']['3']
        y = seed['eval']['tiny']['psnr_y']
        assert 5 < y < 60, y
        assert seed['iters'] == ITERS and seed['sec_per_supervised_frame'] > 0
        assert [p['iter'] for p in seed['validation']][:2] == [4, 8], seed['validation']
        assert report['arms'][arm]['summary']['tiny']['psnr_y']['n'] == 1
    made = json.loads((out / 'lrti_s3' / 'eval_tiny_made_lr.json').read_text())['clips']['chelsea']
    frames = json.loads((out / 'lrti_s3' / 'eval_tiny.json').read_text())['clips']['chelsea']
    assert made['per_frame'] == frames['per_frame']
    assert len(frames['per_frame']['psnr_y']) == len(os.listdir(tmp_path / 'testset' / 'GT' / 'chelsea'))
    # scored in independent 2-frame chunks: every frame scored, and not the whole pass's frames (the chunk
    # borders cut both propagation directions); run_clip's own test checks the chunks themselves
    chunks = json.loads((out / 'lrti_s3' / 'eval_tiny_chunks.json').read_text())['clips']['chelsea']
    assert len(chunks['per_frame']['psnr']) == len(frames['per_frame']['psnr'])
    assert chunks['per_frame']['psnr'] != frames['per_frame']['psnr']
    # the bicubic reference: the demo's own MATLAB-style bicubic of the same LR, scored independently
    from basicsr.metrics import calculate_psnr

    from lrti_demo.report import bicubic_x4

    bic = json.loads((out / 'reference' / 'eval_tiny.json').read_text())['clips']['chelsea']['per_frame']['psnr']
    gts = [cv2.imread(str(tmp_path / 'testset' / 'GT' / 'chelsea' / f))
           for f in sorted(os.listdir(tmp_path / 'testset' / 'GT' / 'chelsea'))]
    assert bic == pytest.approx([calculate_psnr(bicubic_x4(g)[1], g, 0) for g in gts], abs=1e-6)
    md = (out / 'report.md').read_text()
    assert '| LRTI |' in md and '| plain |' in md and '| reference (bicubic) |' in md
    for png in ('val_curves.png', 'per_frame_tiny.png', 'per_frame_tiny_made_lr.png'):
        assert cv2.imread(str(out / png)) is not None, png

    # --export: the report and the finished runs' small files, no weights, no unfinished run ...
    (out / 'ghost_s3').mkdir()
    (out / 'ghost_s3' / 'train.yml').write_text('name: ghost_s3\n')
    with_ghost = json.loads((out / 'campaign.json').read_text())
    with_ghost['runs']['ghost_s3'] = {'segments': [{'start_iter': 0, 'end_iter': 2, 'exit': -9}]}
    (out / 'campaign.json').write_text(json.dumps(with_ghost))
    docs = tmp_path / 'docs'
    assert reproduce.main([str(camp), '--out', str(out), '--report', '--export', str(docs)]) == 0
    exported = {p.relative_to(docs).as_posix() for p in docs.rglob('*') if p.is_file()}
    assert {'report.md', 'report.json', 'val_curves.png', 'runs/campaign.json', 'runs/lrti_s3/eval_tiny.json',
            'runs/lrti_s3/runner.log', 'runs/lrti_s3/train.yml', 'runs/plain_s3/eval_tiny_made_lr.json'} <= exported
    assert any(re.fullmatch(r'runs/lrti_s3/experiments/lrti_s3/train_.*\.log', p) for p in exported), exported
    assert not [p for p in exported if p.endswith(('.pth', '.state')) or 'ghost' in p], exported
    assert json.loads((docs / 'runs' / 'campaign.json').read_text())['runs'] == runs  # not the ghost's segments
    # ... which, copied back under a fresh --out, counts as done: nothing trained or scored again, same report
    again = tmp_path / 'again'
    shutil.copytree(docs / 'runs', again)
    assert reproduce.main([str(camp), '--out', str(again)]) == 0
    assert json.loads((again / 'campaign.json').read_text())['runs'] == runs
    assert (again / 'report.md').read_text() == (out / 'report.md').read_text()
    # --seeds: the report names the seeds asked for (a report mode call trains nothing for the missing seed 7)
    assert reproduce.main([str(camp), '--out', str(again), '--report', '--seeds', '3', '7']) == 0
    assert json.loads((again / 'report.json').read_text())['seeds'] == [3, 7]
    assert 'Seeds [3, 7];' in (again / 'report.md').read_text() and not (again / 'lrti_s7').exists()


@pytest.mark.parametrize('edit, match', [
    ({'arms': {'a': {'sett': {}}}}, "arms.a: unknown key 'sett'"),
    ({'base': 'nowhere.yml'}, "base options file 'nowhere.yml' not found"),
    ({'seeds': ['0']}, 'seeds must be a list of ints'),
    ({'bogus': 1}, "unknown key 'bogus'"),
    ({'arms': {'a': {'set': {'train.nope.x': 1}}}}, "arms.a.set: option 'train.nope' does not exist"),
    ({'test': {'t': {'gt': '.', 'chunk': 0}}}, r'test\.t\.chunk: expected a positive number of frames, got 0'),
    ({'reference': 'nowhere.pth'}, "reference weights 'nowhere.pth' not found"),
])
def test_bad_campaign_files_are_one_line_errors(tiny_data, tmp_path, capsys, edit, match):
    camp = yaml.safe_load(_campaign(tiny_data, tmp_path).read_text())
    camp.update(edit)
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(camp, sort_keys=False))
    assert reproduce.main([str(path), '--out', str(tmp_path / 'o'), '--no-eval']) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('reproduce: error:'), lines
    assert re.search(match, lines[0]), lines[0]


def test_report_compares_costs_only_on_one_machine(tmp_path, monkeypatch):
    """The cost ratio to the first arm pairs runs of one seed on one machine; runs from other machines are left
    out of it and the report names the machines."""
    monkeypatch.setattr(reproduce, 'plot_validation', lambda *a: None)
    monkeypatch.setattr(reproduce, 'plot_per_frame', lambda *a: None)
    camp = {'name': 'c', 'seeds': [0, 1, 2], 'test': {'t': {}},
            'arms': {'plain': {'label': 'plain'}, 'lrti': {'label': 'LRTI'}}}
    walls = {('plain', 0): (100, 'A'), ('lrti', 0): (200, 'A'),  # one machine: lrti costs 2x
             ('plain', 1): (300, 'B'), ('lrti', 1): (200, 'A'),  # two machines: no ratio
             ('plain', 2): (40, None), ('lrti', 2): (100, None)}  # none recorded (older runs): 2.5x
    state = reproduce.State(str(tmp_path / 'campaign.json'))
    runs = {}
    for (arm, seed), (wall, machine) in walls.items():
        seg = {'start_iter': 0, 'end_iter': 10, 'wall_s': wall, 'peak_rss_mib': 100.0, 'exit': 0}
        if machine:
            seg['machine'] = machine
        state.run(f'{arm}_s{seed}')['segments'].append(seg)
        mean = {'psnr_y': 30.0 + seed, 'ssim_y': 0.9, 'psnr': 29.0}
        runs[(arm, seed)] = {'train_wall_s': wall, 'total_iter': 10, 'finished': True, 'frames_per_iter': 4,
                             'eval': {'t': {'mean_of_clips': mean, 'clips': {'x': {'mean': mean}}}}, 'validation': []}
    runs[('plain', 5)] = {'total_iter': 10, 'frames_per_iter': 4}  # not started: no segment, no scores
    report = reproduce.build_report(camp, str(tmp_path), state, runs, {})
    rel = report['arms']['lrti']['relative_cost']
    assert rel['n'] == 2 and rel['mean'] == pytest.approx(2.25), rel
    assert report['arms']['plain']['relative_cost']['mean'] == pytest.approx(1.0)
    assert report['arms']['lrti']['seeds'][1]['machine'] == 'A'
    md = (tmp_path / 'report.md').read_text()
    assert '- A: lrti_s0, lrti_s1, plain_s0' in md and '- B: plain_s1' in md
    assert '- not recorded: lrti_s2, plain_s2\n' in md, md
    assert re.search(r'\| LRTI \|.*\| 2\.25 ± 0\.35 \(2\) \|', md), md
    state.run('lrti_s0')['segments'].append({'start_iter': 10, 'end_iter': 10, 'wall_s': 1, 'peak_rss_mib': 1,
                                             'exit': 0, 'machine': 'B'})  # a run resumed on another machine
    report = reproduce.build_report(camp, str(tmp_path), state, runs, {})
    assert report['arms']['lrti']['seeds'][0]['machine'] == 'mixed'
    assert report['arms']['lrti']['relative_cost']['n'] == 1


def test_machine_name_names_cpu_cores_and_boot():
    name = reproduce_runs.machine_name()
    model, cores = name.split(', ')[:2]
    assert model and cores == f'{os.cpu_count()} cores', name
    if os.path.isfile('/proc/sys/kernel/random/boot_id'):
        boot = open('/proc/sys/kernel/random/boot_id').read()[:8]
        assert name.endswith(f', boot {boot}'), name


def test_report_pairs_arms_by_seed(tmp_path, monkeypatch):
    """``compare`` pairs: A - B per shared seed, mean, sample std, paired t with its two-sided p, and the
    (clip, seed) pairs with A ahead; a seed only one arm finished is left out."""
    monkeypatch.setattr(reproduce, 'plot_validation', lambda *a: None)
    monkeypatch.setattr(reproduce, 'plot_per_frame', lambda *a: None)
    camp = {'name': 'c', 'seeds': [0, 1, 2, 3], 'test': {'t': {}}, 'compare': [['lrti', 'plain']],
            'arms': {'plain': {'label': 'plain'}, 'lrti': {'label': 'LRTI'}}}
    clips = {  # (arm, seed): per-clip Y-PSNR of clips x and y
        ('plain', 0): (30.0, 20.0), ('lrti', 0): (30.5, 20.1),   # +0.3 mean, both clips ahead
        ('plain', 1): (31.0, 21.0), ('lrti', 1): (30.8, 21.4),   # +0.1, one ahead
        ('plain', 2): (32.0, 22.0), ('lrti', 2): (32.2, 22.2),   # +0.2, both ahead
        ('lrti', 3): (40.0, 40.0)}                               # plain has no seed 3: not paired
    state = reproduce.State(str(tmp_path / 'campaign.json'))
    runs = {}
    for (arm, seed), (x, y) in clips.items():
        state.run(f'{arm}_s{seed}')
        per = {c: {'mean': {'psnr_y': v, 'ssim_y': 0.9, 'psnr': v}} for c, v in (('x', x), ('y', y))}
        mean = {'psnr_y': (x + y) / 2, 'ssim_y': 0.9, 'psnr': (x + y) / 2}
        runs[(arm, seed)] = {'train_wall_s': 10, 'total_iter': 10, 'finished': True, 'frames_per_iter': 4,
                             'eval': {'t': {'mean_of_clips': mean, 'clips': per}}, 'validation': []}
    report = reproduce.build_report(camp, str(tmp_path), state, runs, {})
    (c,) = report['comparisons']
    assert c['seeds'] == [0, 1, 2] and c['diffs'] == pytest.approx([0.3, 0.1, 0.2])
    assert c['mean'] == pytest.approx(0.2) and c['std'] == pytest.approx(0.1)
    t = 0.2 / (0.1 / math.sqrt(3))
    assert c['t'] == pytest.approx(t)
    assert c['p'] == pytest.approx(1 - t / math.sqrt(t * t + 2))  # Student t, 2 df, two-sided, closed form
    assert (c['clips_ahead'], c['clips']) == (5, 6)
    md = (tmp_path / 'report.md').read_text()
    assert re.search(r'\| LRTI − plain \| s0: \+0\.3000, s1: \+0\.1000, s2: \+0\.2000 \| \+0\.2000 ± 0\.1000 '
                     r'\| 3\.46 \(2\) \| 0\.074 \| 5 of 6 \|', md), md


def test_campaign_compares_every_arm_with_the_first_by_default(tiny_data, tmp_path):
    good = _campaign(tiny_data, tmp_path)
    camp = reproduce.load_campaign(str(good))
    first, *rest = camp['arms']
    assert rest and camp['compare'] == [[arm, first] for arm in rest]
    bad = yaml.safe_load(good.read_text())
    bad['compare'] = [[first, 'nope']]
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(reproduce.CampaignError, match="compare: no arm 'nope'"):
        reproduce.load_campaign(str(path))


def test_chunked_scoring_runs_each_chunk_from_scratch():
    """``chunk: n`` runs the network once per n consecutive frames (the last chunk shorter), nothing carried
    across: a network whose output sums the frames so far shows every border."""
    import torch
    from reproduce_eval import run_clip

    x = torch.arange(5.0).view(5, 1, 1, 1)
    calls = []

    def net(clip):  # (1, t, c, h, w) -> running sum over t
        calls.append(clip.shape[1])
        return clip.cumsum(1)

    assert run_clip(net, x).flatten().tolist() == [0, 1, 3, 6, 10] and calls == [5]
    calls.clear()
    assert run_clip(net, x, chunk=2).flatten().tolist() == [0, 1, 2, 5, 4] and calls == [2, 2, 1]


def test_peak_rss_is_the_childs_own_not_the_runners():
    """After the runner itself peaked high (as after scoring a run in-process), a small child still reports its
    own peak: ``os.wait4``'s ru_maxrss would report at least the runner's."""
    import ctypes

    import numpy as np

    big = np.ones(600 * 2**20 // 8)  # the runner's own peak: 600 MiB more
    del big
    ctypes.CDLL(None).malloc_trim(0)
    child = 'import time, numpy as np; a = np.ones(100 * 2**20 // 8); time.sleep(1.5)'  # about 100 MiB + python
    proc = subprocess.Popen([sys.executable, '-c', child])
    status, peak, method = reproduce_runs.wait_with_peak_rss(proc, interval=0.1)
    assert os.waitstatus_to_exitcode(status) == 0 and proc.returncode == 0
    if not os.path.isdir('/proc'):
        pytest.skip('no /proc: the fallback (ru_maxrss) is all there is')
    assert method == 'VmHWM'
    assert 100 < peak < 400, peak
