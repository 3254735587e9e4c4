"""scripts/benchmark_training.py end to end: five child processes of a tiny LRTIBasicVSR on a tiny crop."""
import json
import math
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / 'scripts' / 'benchmark_training.py'
CONFIGS = ('plain_T', 'plain_L', 'lrti_batch', 'lrti_seq', 'lrti_n1')
# L = 16 frames against N * T = 4: plain-L keeps the activations of 4x more frames than plain-T.
LONG, CLIP, NUM_CLIPS = 16, 2, 2


def test_benchmark_training_reports_every_config(tmp_path, device):
    out = tmp_path / 'bench.json'
    args = ['--arch', 'LRTIBasicVSR', '--size', 'tiny', '--lr-size', '36', '--clip', str(CLIP), '--long', str(LONG),
            '--num-clips', str(NUM_CLIPS), '--iters', '1', '--warmup', '0', '--threads', '1', '--device', str(device),
            '--json', str(out)]
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report['results']
    assert set(results) == set(CONFIGS)

    want_frames = {'plain_T': NUM_CLIPS * CLIP, 'plain_L': LONG, 'lrti_batch': NUM_CLIPS * CLIP,
                   'lrti_seq': NUM_CLIPS * CLIP, 'lrti_n1': CLIP}
    want_lq = {'plain_T': [NUM_CLIPS, CLIP], 'plain_L': [1, LONG], 'lrti_batch': [1, LONG], 'lrti_seq': [1, LONG],
               'lrti_n1': [1, LONG]}
    for name, r in results.items():
        assert r['supervised_frames'] == want_frames[name], name
        assert r['lq_shape'] == [*want_lq[name], 3, 36, 36], name
        for key in ('sec_per_iter', 'sec_per_frame', 'peak_mib'):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
        assert r['sec_per_frame'] == r['sec_per_iter'] / want_frames[name]
        assert math.isfinite(r['loss'])
        assert r['autocast_dtype'] == 'none'
        if name.startswith('lrti'):
            assert 0 < r['long_pass_share'] < 1, name
            assert r['cache_long_mib'] > 0 and r['cache_windows_mib'] > 0, name
    assert results['lrti_seq']['optimizer_steps'] == NUM_CLIPS

    # Behaviour: memory follows the frames held with gradient (16 vs 4 vs 2 + the no-grad long pass).
    peak = {name: r['peak_mib'] for name, r in results.items()}
    assert peak['plain_L'] > 1.5 * peak['plain_T'], peak
    assert peak['lrti_n1'] < 0.6 * peak['plain_L'], peak
    assert report['ratios']['lrti_n1/plain_L']['peak_mib'] == peak['lrti_n1'] / peak['plain_L']

    verdicts = [t['verdict'] for t in report['targets']]
    assert len(verdicts) == 4 and set(verdicts) <= {'PASS', 'FAIL'}
    assert report['machine']['cpu_count'] == os.cpu_count() and report['machine']['torch']
    assert '| Target |' in proc.stdout and all(v in proc.stdout for v in verdicts)


def test_bad_geometry_is_rejected():
    proc = subprocess.run([sys.executable, str(SCRIPT), '--clip', '8', '--long', '4'], capture_output=True, text=True,
                          timeout=60, env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert proc.returncode == 2 and '--long (4) must be >= --clip (8)' in proc.stderr


def test_amp_reaches_the_model():
    """``--amp bfloat16`` trains under autocast: one child run (the parent's loop is tested above)."""
    args = ['--arch', 'LRTIBasicVSR', '--lr-size', '36', '--clip', '2', '--long', '4', '--num-clips', '2',
            '--iters', '1', '--warmup', '0', '--threads', '1', '--amp', 'bfloat16', '--child', 'lrti_batch']
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['autocast_dtype'] == 'bfloat16' and math.isfinite(result['loss'])


def test_fix_flow_freezes_spynet_in_every_child():
    """``--fix-flow`` reaches each child (as the fine-tuning recipes, SpyNet gets no gradient there)."""
    sys.path.insert(0, str(REPO / 'scripts'))
    import benchmark_training

    argv = benchmark_training.child_argv(benchmark_training.parse_args(['--fix-flow']), 'plain_T')
    assert '--fix-flow' in argv
    assert '--fix-flow' not in benchmark_training.child_argv(benchmark_training.parse_args([]), 'plain_T')
    results = {}
    for flag in ([], ['--fix-flow']):
        args = ['--arch', 'LRTIBasicVSR', '--lr-size', '36', '--clip', '2', '--long', '4', '--num-clips', '2',
                '--iters', '1', '--warmup', '0', '--threads', '1', '--child', 'lrti_batch', *flag]
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, 'PYTHONPATH': str(REPO)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[bool(flag)] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results[False]['trained_params_m'] == results[False]['params_m']
    spynet_m = 1.44  # SpyNet's 1.44 M parameters, most of the tiny network's
    assert abs(results[True]['params_m'] - results[True]['trained_params_m'] - spynet_m) < 0.01, results
