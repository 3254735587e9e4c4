"""The demo: make clips from scikit-image's photos, build LMDBs, train the tiny config, test, report.

    python scripts/run_demo.py                 # everything under ./demo, ./experiments, ./results

Steps (each through the project's public tools, as a user would run them):
  1. render training and held-out clips with sub-pixel camera motion (lrti_plugin.data.demo_data);
  2. build GT and x4 bicubic LR LMDBs with ``make_lmdb`` (the function behind scripts/make_lmdb.py);
  3. train ``options/train_demo.yml`` with ``python -m lrti_plugin.train`` (a subprocess);
  4. test the trained weights on the held-out clips with ``python -m lrti_plugin.test`` (saves SR frames);
  5. score the saved SR frames and MATLAB-bicubic against the GT, write ``demo/report.md``,
     ``demo/report.json``, ``demo/comparison.png`` (LR / bicubic / ours / GT) and
     ``demo/training_curve.png``.
Exits 1 if the model does not beat bicubic on the held-out clips.
"""
import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import lrti_plugin  # noqa: E402,F401
from lrti_plugin.utils.options import apply_overrides, dump_options, load_options  # noqa: E402

TRAIN_OPT = os.path.join(REPO, 'options', 'train_demo.yml')
TEST_OPT = os.path.join(REPO, 'options', 'test_demo.yml')


def make_data(data_dir: str, seed: int) -> None:
    """Steps 1-2: clips and LMDBs under ``data_dir`` (skipped if the LMDBs exist)."""
    from lrti_plugin.data.demo_data import demo_specs, write_clips
    from lrti_plugin.data.lmdb_tools import make_lmdb

    train_specs, heldout_specs = demo_specs(seed=seed)
    for split, specs in (('train', train_specs), ('heldout', heldout_specs)):
        lmdb_path = os.path.join(data_dir, f'{split}_GT.lmdb')
        if os.path.isdir(lmdb_path):
            print(f'[demo] {lmdb_path} exists, reusing it')
            continue
        png_root = os.path.join(data_dir, f'{split}_png')
        if not os.path.isdir(png_root):
            print(f'[demo] rendering {len(specs)} {split} clips into {png_root}')
            write_clips(png_root, specs)
        make_lmdb(png_root, lmdb_path, layout='reds', make_lr=4, progress=sys.stderr.isatty())


def run_runner(kind: str, opt_path: str, cwd: str, log_path: str) -> float:
    """Run ``python -m lrti_plugin.<kind> -opt opt_path`` in ``cwd``; returns its wall time (s)."""
    cmd = [sys.executable, '-m', f'lrti_plugin.{kind}', '-opt', opt_path]
    print('[demo] $ ' + ' '.join(cmd))
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f'[demo] {kind} failed (exit {proc.returncode}); see {log_path}')
    return time.time() - start


def demo_options(src: str, data_dir: str, overrides: dict) -> dict:
    """Load an options file, point its datasets at ``data_dir`` and apply ``overrides`` (dotted keys)."""
    opt = load_options(src)
    for ds in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            if ds.get(key):
                ds[key] = os.path.join(data_dir, os.path.basename(ds[key]))
    return apply_overrides(opt, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo', help='folder for data and report (default: ./demo)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations (default: the tiny config)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    from lrti_plugin.utils.report import score_heldout, write_report

    out = os.path.abspath(args.out)
    data_dir = os.path.join(out, 'data')
    os.makedirs(data_dir, exist_ok=True)
    make_data(data_dir, args.seed)

    overrides = {'manual_seed': args.seed}
    if args.iters:
        overrides.update({'train.total_iter': args.iters, 'train.scheduler.periods': [args.iters]})
    train_opt = demo_options(TRAIN_OPT, data_dir, overrides)
    train_yml = dump_options(train_opt, os.path.join(out, 'train_demo.yml'))
    train_time = run_runner('train', train_yml, os.getcwd(), os.path.join(out, 'train.log'))
    print(f'[demo] training took {train_time:.0f} s')

    model = os.path.join(os.getcwd(), 'experiments', train_opt['name'], 'models', 'net_g_latest.pth')
    test_opt = demo_options(TEST_OPT, data_dir, {'path.pretrain_network_g': model})
    test_yml = dump_options(test_opt, os.path.join(out, 'test_demo.yml'))
    run_runner('test', test_yml, os.getcwd(), os.path.join(out, 'test.log'))

    sr_root = os.path.join(os.getcwd(), 'results', test_opt['name'], 'visualization',
                           test_opt['datasets']['test']['name'])
    scores = score_heldout(os.path.join(data_dir, 'heldout_png'), sr_root, suffix=test_opt['name'])
    train_log = os.path.join(os.getcwd(), 'experiments', train_opt['name'])
    report = write_report(out, scores, train_log, train_time, train_opt)
    print(open(report).read())
    if scores['mean']['ours_psnr'] <= scores['mean']['bicubic_psnr']:
        sys.exit('[demo] the model did not beat bicubic on the held-out clips')


if __name__ == '__main__':
    main()

