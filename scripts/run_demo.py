"""The demo: plain short clips versus LRTI, same small network and budget, scored on held-out long clips.

    python scripts/run_demo.py                   # everything under ./demo, ./experiments, ./results
    python scripts/run_demo.py --split val       # the same on the validation photos, under ./demo_val
    python scripts/run_demo.py --split val --arms lrti --long-frames 32   # one arm, another long pass L

Steps (each through the project's public tools, as a user would run them):
  1. fetch the pretrained SpyNet (``scripts/get_weights.py``: the official BasicVSR checkpoint's SpyNet);
  2. render training, validation and held-out long clips with sub-pixel camera motion from scikit-image's
     photos (``lrti_demo.clips``; no photo is in two splits) and build GT and x4 MATLAB-bicubic LR LMDBs
     with ``make_lmdb`` (the function behind ``scripts/make_lmdb.py``);
  3. train ``options/train_demo.yml`` (experiment ``demo_plain``: 2 independent 4-frame clips per
     iteration from zero states) and ``options/train_demo_lrti.yml`` (``demo_lrti``: a 16-frame long pass,
     then 2 windows of 4 frames from its cached states), each with ``python -m lrti_plugin.train``: the
     same network, data, iterations and supervised frames per iteration;
  4. test both on the held-out clips (each clip in one whole pass) with ``python -m lrti_plugin.test``;
  5. score them and MATLAB bicubic against the GT; write ``demo/report.md``, ``demo/report.json`` (keys
     ``bicubic``, ``plain``, ``lrti``: ``{"psnr": ..., "ssim": ...}``), ``demo/comparison.png`` (bicubic /
     plain / LRTI / GT crops), ``demo/per_frame.png`` and ``demo/training_curve.png``.
  6. score both once more in whole passes with every recurrent state bounded at RMS ``--state-max-rms`` (a
     test-time setting of the archs, chosen on the validation clips): a separate table, and
     ``bounded_psnr``/``bounded_ssim`` per arm in ``report.json``; the keys above stay the networks as trained.
Exits 1 if either arm does not beat bicubic; the LRTI-vs-plain difference is reported whatever its sign.
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

ARMS = {'plain': os.path.join(REPO, 'options', 'train_demo.yml'),
        'lrti': os.path.join(REPO, 'options', 'train_demo_lrti.yml')}
TEST_OPT = os.path.join(REPO, 'options', 'test_demo.yml')
# The extra test-time scoring: every recurrent state bounded at this RMS (the archs' state_max_rms). Chosen on the
# validation clips of seeds 0, 1 and 2, both arms (docs/results.md, section 2), never on the held-out clips.
STATE_MAX_RMS = 0.1


def get_spynet(dest: str) -> str:
    """Step 1: the SpyNet file the demo options name (downloaded and verified once, then kept)."""
    sys.path.insert(0, os.path.join(REPO, 'scripts'))
    import get_weights

    path = os.path.join(dest, 'flownet', get_weights.SPYNET_NAME)
    if not os.path.isfile(path):
        if get_weights.main(['--dest', dest]) != 0:
            sys.exit('[demo] could not fetch the pretrained weights (see above)')
    return path


def make_data(data_dir: str, seed: int, tiny: bool = False) -> None:
    """Step 2: clips and LMDBs of every split under ``data_dir`` (an existing LMDB is reused)."""
    from lrti_demo.clips import demo_specs, write_clips
    from lrti_plugin.data.lmdb_tools import make_lmdb

    size = dict(num_frames=8, heldout_frames=6, height=144, width=144, clips_per_photo=1) if tiny else {}
    for split, specs in demo_specs(seed=seed, **size).items():
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
    print('[demo] $ ' + ' '.join(cmd), flush=True)
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f'[demo] {kind} failed (exit {proc.returncode}); see {log_path}')
    return time.time() - start


def demo_options(src: str, data_dir: str, split: str, overrides: dict) -> dict:
    """Load an options file, point its datasets at ``data_dir`` (validation/test on ``split``), override."""
    opt = load_options(src)
    for phase, ds in opt['datasets'].items():
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            if ds.get(key):
                name = os.path.basename(ds[key])
                if phase != 'train':
                    name = name.replace('heldout_', f'{split}_')
                ds[key] = os.path.join(data_dir, name)
    return apply_overrides(opt, overrides)


def experiment_suffix(split: str, seed: int) -> str:
    """What the arms' experiment names get appended: ``demo_plain`` / ``demo_lrti`` for the report (held-out split,
    seed 0); another split or seed trains in its own folders, so it never archives the report's runs."""
    return ('' if split == 'heldout' else f'_{split}') + (f'_s{seed}' if seed else '')


def long_pass_tag(long_frames: int | None) -> str:
    """What names of a run get appended for the LRTI arm's long pass: ``_L<n>`` for an L other than the options'
    own, else nothing (the report's runs keep their names)."""
    default = load_options(ARMS['lrti'])['datasets']['train']['long_frames']
    return '' if long_frames is None or long_frames == default else f'_L{long_frames}'


def arm_options(arm: str, data_dir: str, split: str, seed: int, overrides: dict,
                long_frames: int | None = None, tiny: bool = False) -> dict:
    """The training options of one arm: its options file pointed at ``data_dir`` with ``overrides``, the LRTI
    arm's long pass set to ``long_frames`` L (None: the options' L; tiny runs: 6), and an experiment name that
    holds the split, the seed and an L other than the options' (so a settings trial never lands in, and archives,
    the report's runs)."""
    opt = demo_options(ARMS[arm], data_dir, split, overrides)
    opt['name'] += experiment_suffix(split, seed)
    ds = opt['datasets']['train']
    if 'long_frames' in ds:
        tag = long_pass_tag(long_frames)
        if tag:
            ds['long_frames'] = long_frames
            opt['name'] += tag
        elif tiny:
            ds['long_frames'] = 6
    return opt


def default_out(split: str, seed: int, arms, long_frames: int | None = None) -> str:
    """``--out`` when none is given: ``demo`` for the report's run, else a folder named after what differs (split,
    seed, the LRTI arm's L, a subset of arms), so a settings trial never overwrites the report of another run."""
    out = 'demo' + experiment_suffix(split, seed) + (long_pass_tag(long_frames) if 'lrti' in arms else '')
    if set(arms) != set(ARMS):
        out += '_' + '_'.join(arm for arm in ARMS if arm in arms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=None,
                        help='folder for data and report (default: ./demo for the default run; other runs get a '
                             'folder of their own, e.g. ./demo_val_s1_L32_lrti)')
    parser.add_argument('--split', default='heldout', choices=('heldout', 'val'),
                        help='clips to score: heldout (the report) or val (choosing settings)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations (default: the options)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--arms', nargs='+', choices=tuple(ARMS), default=list(ARMS),
                        help='arms to train and score (default: both; the report then holds only these)')
    parser.add_argument('--long-frames', type=int, default=None, metavar='L',
                        help="the LRTI arm's long pass, in frames (default: the options' 16)")
    parser.add_argument('--state-max-rms', type=float, default=STATE_MAX_RMS, metavar='B',
                        help='also score each arm in whole passes with its states bounded at RMS B (0: not; '
                             f'default {STATE_MAX_RMS}, chosen on the validation clips)')
    parser.add_argument('--tiny', action='store_true',
                        help='a seconds-long smoke run (tests): tiny clips, tiny random networks, 2 iterations')
    args = parser.parse_args()
    if not args.state_max_rms >= 0:  # nan too
        parser.error(f'--state-max-rms must be a positive bound (or 0: none), got {args.state_max_rms}')
    if args.long_frames is not None and args.long_frames < 1:
        parser.error(f'--long-frames must be a positive number of frames, got {args.long_frames}')
    arms = [arm for arm in ARMS if arm in args.arms]

    from lrti_demo.report import score_arms, score_chunked, write_report

    out = os.path.abspath(args.out or default_out(args.split, args.seed, arms, args.long_frames))
    data_dir = os.path.join(out, 'data')
    os.makedirs(data_dir, exist_ok=True)
    weights = os.path.join(os.getcwd(), 'experiments', 'pretrained_models')
    spynet = None if args.tiny else get_spynet(weights)
    make_data(data_dir, args.seed, args.tiny)

    overrides = {'manual_seed': args.seed, 'network_g.spynet_path': spynet,
                 'path.pretrain_network_g': os.path.join(weights, 'BasicVSR', 'BasicVSR_Vimeo90K_BIx4-2a29695a.pth')}
    if args.tiny:
        args.iters = args.iters or 2
        overrides.update({'network_g.num_feat': 8, 'network_g.num_block': 1, 'val.val_freq': 2,
                          'path.pretrain_network_g': None,
                          'logger.print_freq': 1, 'datasets.train.num_worker_per_gpu': 0})
    if args.iters:
        overrides.update({'train.total_iter': args.iters, 'train.scheduler.periods': [args.iters]})
    sr_roots, logs, seconds, settings, opts = {}, {}, {}, {}, {}
    for arm in arms:
        train_opt = arm_options(arm, data_dir, args.split, args.seed, overrides, args.long_frames, args.tiny)
        opts[arm] = train_opt
        train_yml = dump_options(train_opt, os.path.join(out, f'train_{arm}.yml'))
        seconds[arm] = run_runner('train', train_yml, os.getcwd(), os.path.join(out, f'train_{arm}.log'))
        print(f'[demo] {arm}: training took {seconds[arm]:.0f} s', flush=True)
        exp = os.path.join(os.getcwd(), 'experiments', train_opt['name'])
        train_logs = sorted(f for f in os.listdir(exp) if f.startswith('train_') and f.endswith('.log'))
        logs[arm] = os.path.join(exp, train_logs[-1])

        test_opt = demo_options(TEST_OPT, data_dir, args.split, {
            'path.pretrain_network_g': os.path.join(exp, 'models', 'net_g_latest.pth'),
            'name': f'{train_opt["name"]}_test', 'network_g': train_opt['network_g']})
        test_yml = dump_options(test_opt, os.path.join(out, f'test_{arm}.yml'))
        run_runner('test', test_yml, os.getcwd(), os.path.join(out, f'test_{arm}.log'))
        sr_roots[arm] = (os.path.join(os.getcwd(), 'results', test_opt['name'], 'visualization',
                                      test_opt['datasets']['test']['name']), test_opt['name'])
        ds = train_opt['datasets']['train']
        frames = (f"long pass L={ds['long_frames']}, {ds['num_clips']} windows x T={ds['clip_frames']} from its "
                  f'cached states' if 'long_frames' in ds else
                  f"{ds['batch_size_per_gpu']} clips x T={ds['clip_frames']} from zero states")
        settings[arm] = (f"experiment `{train_opt['name']}`: {train_opt['train']['total_iter']} iterations, "
                         f'{frames}, LR crop {ds["gt_size"] // 4}x{ds["gt_size"] // 4}')
    net = train_opt['network_g']
    settings['network'] = (f"`{net['type']}` (num_feat {net['num_feat']}, num_block {net['num_block']}), pretrained "
                           f'SpyNet frozen, seed {args.seed}')
    settings['scored on'] = f'{args.split} clips'
    gt_root = os.path.join(data_dir, f'{args.split}_png')
    scores = score_arms(gt_root, sr_roots)
    chunk = train_opt['datasets']['train'].get('clip_frames', 4)
    nets = {arm: load_net(opts[arm]) for arm in arms}
    chunked = {arm: score_chunked(nets[arm], gt_root, chunk) for arm in arms}
    whole = 10 ** 9  # one chunk: the whole clip in one pass
    bounded = {arm: score_chunked(nets[arm].bound_states(args.state_max_rms), gt_root, whole)
               for arm in arms} if args.state_max_rms else {}
    report = write_report(out, scores, logs, seconds, settings, chunked, chunk, bounded, args.state_max_rms)
    print(open(report).read())
    failed = [arm for arm in arms if chunked[arm]['mean']['psnr'] <= scores['mean']['bicubic']['psnr']]
    if 'lrti' in arms and 'lrti' not in failed and scores['mean']['lrti']['psnr'] <= scores['mean']['bicubic']['psnr']:
        failed.append('lrti (whole clips)')
    if failed:
        sys.exit(f'[demo] {", ".join(failed)} did not beat bicubic on the {args.split} clips')


def load_net(train_opt: dict):
    """The trained network of one arm (its ``net_g_latest.pth``), in eval mode, on the CPU."""
    from copy import deepcopy

    import torch
    from basicsr.archs import build_network

    net = build_network(deepcopy(train_opt['network_g']))
    weights = os.path.join(os.getcwd(), 'experiments', train_opt['name'], 'models', 'net_g_latest.pth')
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'], strict=True)
    return net.eval()


if __name__ == '__main__':
    main()
