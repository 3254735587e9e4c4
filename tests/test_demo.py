"""scripts/run_demo.py end to end in its --tiny form: both arms train and test through the real runners, the
report holds bicubic, plain and LRTI, the pictures are drawn, and an arm below bicubic fails the demo."""
import json
import os
import subprocess
import sys

import cv2
from conftest import REPO


def test_tiny_demo_reports_both_arms_and_fails_below_bicubic(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '2'}
    proc = subprocess.run([sys.executable, str(REPO / 'scripts' / 'run_demo.py'), '--tiny', '--out', 'demo',
                           '--state-max-rms', '1e-4'],  # a bound that must change the output
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    out = tmp_path / 'demo'
    report = json.loads((out / 'report.json').read_text())
    for arm in ('bicubic', 'plain', 'lrti'):
        assert set(report[arm]) >= {'psnr', 'ssim'} and 5 < report[arm]['psnr'] < 60, (arm, report[arm])
    assert report['plain']['psnr'] != report['lrti']['psnr']  # two different trainings
    assert report['state_max_rms'] == 1e-4
    for arm in ('plain', 'lrti'):  # the bounded whole-clip score is another pass, with the states held down
        assert 5 < report[arm]['bounded_psnr'] < 60 and abs(report[arm]['bounded_psnr'] - report[arm]['psnr']) > 1e-3
    for arm in ('plain', 'lrti'):
        assert (tmp_path / 'experiments' / f'demo_{arm}' / 'models' / 'net_g_latest.pth').exists()
        frames = report['per_frame_psnr']['chelsea'][arm]
        assert len(frames) == 6
    log = (tmp_path / 'experiments' / 'demo_lrti').glob('train_*.log')
    assert 'cache_long_mib' in next(log).read_text(), 'the LRTI arm did not run the strategy'
    comparison = cv2.imread(str(out / 'comparison.png'))
    assert comparison is not None and comparison.shape[1] == 4 * (2 * 96 + 4)  # bicubic | plain | lrti | gt
    for png in ('per_frame.png', 'training_curve.png'):
        assert cv2.imread(str(out / png)) is not None
    from lrti_demo.report import parse_train_log  # the curve is drawn from each arm's training log
    assert set(report['train_logs']) == {'plain', 'lrti'}
    for log in report['train_logs'].values():
        assert len(parse_train_log(log)['loss']['l_pix']) == 2, log
    md = (out / 'report.md').read_text()
    assert 'LRTI minus plain' in md and 'bounded whole-clip PSNR' in md
    beaten = [a for a in ('plain', 'lrti') if report[a]['psnr'] > report['bicubic']['psnr']]
    if len(beaten) == 2:
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:  # 2 iterations of an 8-channel net: below bicubic, so the demo must say so and fail
        assert proc.returncode == 1 and 'did not beat bicubic' in proc.stderr, proc.stderr[-2000:]


def test_other_seeds_and_splits_train_in_their_own_experiment_folders():
    sys.path.insert(0, str(REPO / 'scripts'))
    from run_demo import experiment_suffix

    assert experiment_suffix('heldout', 0) == ''  # the report's runs: demo_plain, demo_lrti
    names = {experiment_suffix(split, seed) for split in ('heldout', 'val') for seed in (0, 1, 2)}
    assert len(names) == 6  # a second seed never lands in (and archives) the first one's folders


def test_a_long_pass_trial_changes_only_the_lrti_arm_and_trains_in_its_own_folder(tmp_path):
    sys.path.insert(0, str(REPO / 'scripts'))
    from run_demo import arm_options

    data = str(tmp_path / 'data')
    default = arm_options('lrti', data, 'val', 1, {})
    trial = arm_options('lrti', data, 'val', 1, {}, long_frames=32)
    assert default['datasets']['train']['long_frames'] == 16 and trial['datasets']['train']['long_frames'] == 32
    assert trial['name'] not in (default['name'], 'demo_lrti')  # never archives the L = 16 run of that seed
    assert arm_options('lrti', data, 'val', 1, {}, long_frames=16)['name'] == default['name']
    plain = arm_options('plain', data, 'val', 1, {}, long_frames=32)
    assert 'long_frames' not in plain['datasets']['train'] and plain['name'] == 'demo_plain_val_s1'
    assert trial['datasets']['train']['dataroot_gt'] == os.path.join(data, 'train_GT.lmdb')
    assert trial['datasets']['val']['dataroot_gt'] == os.path.join(data, 'val_GT.lmdb')
    assert arm_options('lrti', data, 'heldout', 0, {}, tiny=True)['datasets']['train']['long_frames'] == 6


def test_runs_other_than_the_default_write_their_report_elsewhere():
    sys.path.insert(0, str(REPO / 'scripts'))
    from run_demo import ARMS, default_out

    assert default_out('heldout', 0, list(ARMS)) == 'demo'  # make demo's report
    assert default_out('heldout', 0, list(ARMS), long_frames=16) == 'demo'  # the options' own L
    outs = {default_out(split, seed, arms, lf) for split in ('heldout', 'val') for seed in (0, 2)
            for arms in (['plain', 'lrti'], ['lrti'], ['plain']) for lf in (None, 32)}
    assert len(outs) == 2 * 2 * 3 * 2 - 4  # each its own folder (L does not change the 4 plain-only runs)
