"""Run an experiment campaign: named arms x seeds through the real runner, then score and plot them.

    python scripts/reproduce.py options/reproduce/scale1_basicvsr.yml            # run / continue
    python scripts/reproduce.py options/reproduce/scale1_basicvsr.yml --report   # tables and plots only
    python scripts/reproduce.py CAMPAIGN.yml --seeds 0 --arms lrti plain_short --iters 20   # a subset
    python scripts/reproduce.py CAMPAIGN.yml --report --export docs/results/NAME   # publish (no weights)

A campaign file names a base options file, the seeds, the test sets and the arms; each arm is the base
plus ``set`` (dotted keys -> values) and ``drop`` (dotted keys removed)::

    name: scale1_basicvsr
    base: options/finetune_basicvsr_real_lrti.yml
    seeds: [0, 1]
    reference: experiments/pretrained_models/BasicVSR/BasicVSR_Vimeo90K_BIx4-2a29695a.pth   # optional; or bicubic
    test:
      vid4: {lq: ../shared/data/vid4/BIx4, gt: ../shared/data/vid4/GT}     # folders of clip folders
      mine: {gt: my_clips}          # no lq: the x4 MATLAB-bicubic LR is made from the GT
      mine_chunks: {gt: my_clips, chunk: 4}   # each clip in independent 4-frame passes
    arms:
      lrti: {}
      lrti_zeros: {set: {train.lrti.init: zeros}}
    compare: [[lrti, lrti_zeros]]   # optional: A - B paired by seed (default: every arm against the first)

Paths are relative to the current directory (run it from the repository root). Everything goes under
``--out`` (default ``results/reproduce/<name>``):

* ``<arm>_s<seed>/``: the run's options (``train.yml``) and BasicSR's ``experiments/<name>/`` (models, logs,
  training states). Training is ``python -m lrti_plugin.train -opt train.yml --auto_resume`` in a child
  process; its peak RSS (its own ``VmHWM``, polled; data-loader workers not included) is recorded per segment
  in ``campaign.json``; its training wall time is read from BasicSR's logs (each segment from its first to its
  last line, killed ones included);
* ``<arm>_s<seed>/eval_<set>.json``: the trained weights (``params_ema`` when present) on every clip of
  every test set, each clip in one whole-sequence pass: Y and RGB PSNR/SSIM per frame (crop border 0,
  output rounded to uint8 as BasicSR's ``tensor2img``);
* ``report.json``, ``report.md`` (mean, spread and per-seed values per arm; cost per supervised frame; peak
  memory; the ``compare`` pairs as paired differences by seed, with t, p and the (clip, seed) pairs ahead),
  ``val_curves.png`` (validation PSNR against iterations and training wall time, mean over seeds, band =
  min..max), ``per_frame_<set>.png`` (PSNR per frame index of each test clip).

Resumable: a run whose ``net_g_latest.pth`` exists is trained; one whose ``eval_<set>.json`` exists is
scored (and counts as trained: a campaign folder kept without its weights, e.g. copied from ``docs/results``,
is not trained again); anything else continues where it stopped (BasicSR's ``--auto_resume``), also after a kill, across
sessions. The runs go seed-major (every arm of the first seed, then the next seed), so a stopped campaign
has comparable partial results.
"""
import argparse
import json
import math
import os
import signal
import sys
from copy import deepcopy
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reproduce_{eval,report,runs}.py

import yaml  # noqa: E402
from reproduce_eval import BICUBIC, CampaignError, eval_run  # noqa: E402
from reproduce_report import plot_per_frame, plot_validation, write_markdown  # noqa: E402
from reproduce_runs import State, experiment_dir, export_campaign, is_scored, parse_logs, train_run  # noqa: E402

CAMPAIGN_KEYS = ('name', 'base', 'seeds', 'arms', 'test', 'reference', 'description', 'compare')
ARM_KEYS = ('set', 'drop', 'label')


def load_campaign(path: str) -> dict:
    with open(path) as f:
        camp = yaml.safe_load(f)
    if not isinstance(camp, dict):
        raise CampaignError(f'{path}: expected a mapping')
    for key in camp:
        if key not in CAMPAIGN_KEYS:
            raise CampaignError(f'{path}: unknown key {key!r}; known: {", ".join(CAMPAIGN_KEYS)}')
    for key in ('name', 'base', 'seeds', 'arms'):
        if key not in camp:
            raise CampaignError(f'{path}: missing key {key!r}')
    if not isinstance(camp['arms'], dict) or not camp['arms']:
        raise CampaignError(f'{path}: arms must be a non-empty mapping of arm name -> overrides')
    for arm, spec in camp['arms'].items():
        spec = spec or {}
        bad = [k for k in spec if k not in ARM_KEYS]
        if bad:
            raise CampaignError(f'{path}: arms.{arm}: unknown key {bad[0]!r}; known: {", ".join(ARM_KEYS)}')
        camp['arms'][arm] = spec
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in camp['seeds']):
        raise CampaignError(f'{path}: seeds must be a list of ints, got {camp["seeds"]!r}')
    for name, spec in (camp.get('test') or {}).items():
        if not isinstance(spec, dict) or set(spec) - {'lq', 'gt', 'max_frames', 'chunk'} or 'gt' not in spec:
            raise CampaignError(f'{path}: test.{name}: expected {{gt: folder[, lq: folder][, max_frames: n]'
                                '[, chunk: n]}')
        if 'chunk' in spec and not (isinstance(spec['chunk'], int) and spec['chunk'] > 0):
            raise CampaignError(f'{path}: test.{name}.chunk: expected a positive number of frames, '
                                f'got {spec["chunk"]!r}')
    compare = camp.get('compare')
    if compare is None:  # default: every arm against the first
        first, *rest = camp['arms']
        camp['compare'] = [[arm, first] for arm in rest]
    elif not isinstance(compare, list) or not all(isinstance(c, list) and len(c) == 2 for c in compare):
        raise CampaignError(f'{path}: compare: expected a list of [arm, arm] pairs, got {compare!r}')
    for pair in camp['compare']:
        for arm in pair:
            if arm not in camp['arms']:
                raise CampaignError(f'{path}: compare: no arm {arm!r} (arms: {", ".join(camp["arms"])})')
    return camp


def drop_option(opt: dict, dotted: str) -> None:
    node = opt
    *parents, last = dotted.split('.')
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            raise CampaignError(f'drop: option {dotted!r} does not exist')
        node = node[key]
    if last not in node:
        raise CampaignError(f'drop: option {dotted!r} does not exist')
    del node[last]


def arm_options(base: dict, arm: str, spec: dict, seed: int, iters=None) -> dict:
    """The options of one run: base, then the arm's ``drop`` and ``set``, then name and seed."""
    from lrti_plugin.utils.options import set_option

    opt = deepcopy(base)
    for dotted in spec.get('drop') or []:
        drop_option(opt, dotted)
    for dotted, value in (spec.get('set') or {}).items():
        try:
            set_option(opt, dotted, value)
        except KeyError as err:
            raise CampaignError(f'arms.{arm}.set: {err.args[0]}') from err
    opt['name'] = f'{arm}_s{seed}'
    opt['manual_seed'] = seed
    absolute_paths(opt)
    if iters is not None:
        opt['train']['total_iter'] = iters
        if 'periods' in opt['train'].get('scheduler', {}):
            opt['train']['scheduler']['periods'] = [iters]
    return opt


PATH_KEYS = {'datasets': ('dataroot_gt', 'dataroot_lq', 'meta_info_file'), 'path': ('pretrain_network_g',),
             'network_g': ('spynet_path',)}


def absolute_paths(opt: dict) -> None:
    """Make the options' file paths absolute (relative to the current directory), in place: the runs
    execute in their own folders."""
    nodes = [(ds, PATH_KEYS['datasets']) for ds in (opt.get('datasets') or {}).values()]
    nodes += [(opt.get(section) or {}, keys) for section, keys in PATH_KEYS.items() if section != 'datasets']
    for node, keys in nodes:
        for key in keys:
            if isinstance(node.get(key), str) and not os.path.isabs(node[key]):
                node[key] = os.path.abspath(node[key])


def supervised_frames(opt: dict) -> int:
    """Frames with a loss per iteration and process: batch x N x T (long-clip windows) or batch x T."""
    ds = opt['datasets']['train']
    t = ds.get('clip_frames', ds.get('num_frame'))  # num_frame: the deprecated name in LRTIRecurrentDataset
    per_sample = ds['num_clips'] * t if 'num_clips' in ds else t
    return int(ds['batch_size_per_gpu']) * int(per_sample)


def _stats(values: list) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {'mean': mean, 'std': std, 'min': min(values), 'max': max(values), 'n': n, 'values': values}


def paired_comparison(arms: dict, a: str, b: str, test: str, metric: str = 'psnr_y'):
    """Arm ``a`` minus arm ``b`` on ``test``, paired by seed (only seeds both arms finished).

    Returns the per-seed differences of the mean over clips, their mean and sample std, the paired t
    statistic and its two-sided p value (Student t, n - 1 degrees of freedom; None below two seeds or with no
    spread), and how many (clip, seed) pairs have ``a`` ahead; None when no seed is shared.
    """
    if a not in arms or b not in arms:
        return None
    sa, sb = arms[a]['seeds'], arms[b]['seeds']
    seeds = sorted(k for k in sa if k in sb and test in sa[k]['eval'] and test in sb[k]['eval'])
    if not seeds:
        return None
    diffs = [sa[k]['eval'][test][metric] - sb[k]['eval'][test][metric] for k in seeds]
    clips = [(sa[k]['per_clip'][test][c][metric], sb[k]['per_clip'][test][c][metric])
             for k in seeds for c in sa[k]['per_clip'][test] if c in sb[k]['per_clip'][test]]
    st = _stats(diffs)
    t = p = None
    if st['n'] > 1 and st['std'] > 0:
        from scipy.stats import t as student

        t = st['mean'] / (st['std'] / math.sqrt(st['n']))
        p = float(2 * student.sf(abs(t), st['n'] - 1))
    return {'a': a, 'b': b, 'test': test, 'metric': metric, 'seeds': seeds, 'diffs': diffs, 'mean': st['mean'],
            'std': st['std'], 't': t, 'p': p, 'clips_ahead': sum(x > y for x, y in clips), 'clips': len(clips)}


def run_machine(segments: list):
    """The machine all of a run's training segments ran on; ``'mixed'`` when they differ; None when none was
    recorded (segments written before machines were recorded: such runs are taken to share one machine)."""
    names = {s.get('machine') for s in segments} - {None}
    return None if not names else names.pop() if len(names) == 1 else 'mixed'


def build_report(camp: dict, out: str, state: State, runs: dict, reference: dict) -> dict:
    """Collect every finished run into ``report.json`` / ``report.md`` and the plots."""
    arms = {}
    for (arm, seed), info in runs.items():
        rec = state.data['runs'].get(f'{arm}_s{seed}', {'segments': []})
        segs = rec['segments']
        entry = arms.setdefault(arm, {'label': camp['arms'][arm].get('label', arm), 'seeds': {}})
        train_s = info.get('train_wall_s', 0.0)
        iters = info['total_iter'] if info.get('finished') else max((s['end_iter'] for s in segs), default=0)
        entry['seeds'][seed] = {
            'eval': {name: r['mean_of_clips'] for name, r in info.get('eval', {}).items()},
            'per_clip': {name: {c: v['mean'] for c, v in r['clips'].items()}
                         for name, r in info.get('eval', {}).items()},
            'train_wall_s': train_s, 'iters': iters, 'segments': len(segs),
            'sec_per_supervised_frame': train_s / (iters * info['frames_per_iter']) if iters else None,
            # segments recorded before 2026-12-07 have no rss_method: their ru_maxrss included the runner's own peak
            'peak_rss_mib': max((s['peak_rss_mib'] for s in segs if s.get('rss_method', '').startswith('VmHWM')),
                                default=None),
            'machine': run_machine(segs),
            'validation': info.get('validation', []),
        }
        entry['frames_per_iter'] = info['frames_per_iter']
    base_arm = next((a for a in camp['arms'] if a in arms), None)  # relative costs are against the first arm
    baseline = arms.get(base_arm)
    for entry in arms.values():
        seeds = entry['seeds'].values()
        ratios = [s['sec_per_supervised_frame'] / b['sec_per_supervised_frame']
                  for k, s in entry['seeds'].items() for b in [baseline['seeds'].get(k)]
                  if b and s['sec_per_supervised_frame'] and b['sec_per_supervised_frame']
                  and s['machine'] == b['machine'] != 'mixed']
        entry['relative_cost'] = _stats(ratios) if ratios else None  # x the first arm, same seed, same machine
        entry['summary'] = {}
        for test in camp.get('test') or {}:
            done = [s['eval'][test] for s in seeds if test in s['eval']]
            if done:
                entry['summary'][test] = {k: _stats([d[k] for d in done]) for k in done[0]}
        costs = [s['sec_per_supervised_frame'] for s in seeds if s['sec_per_supervised_frame']]
        entry['summary']['sec_per_supervised_frame'] = _stats(costs) if costs else None
        peaks = [s['peak_rss_mib'] for s in seeds if s['peak_rss_mib']]
        entry['summary']['peak_rss_mib'] = max(peaks) if peaks else None
    comparisons = [c for test in camp.get('test') or {} for a, b in camp.get('compare') or []
                   if (c := paired_comparison(arms, a, b, test))]
    report = {'campaign': camp['name'], 'seeds': camp['seeds'], 'reference': reference, 'cost_baseline': base_arm,
              'arms': arms, 'comparisons': comparisons,
              'written': datetime.now().isoformat(timespec='seconds')}
    with open(os.path.join(out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    write_markdown(camp, out, report)
    plot_validation(out, report)
    for test in camp.get('test') or {}:
        plot_per_frame(out, test, runs, reference)
    return report


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('campaign', help='campaign YAML (options/reproduce/*.yml)')
    parser.add_argument('--out', help='output folder (default: results/reproduce/<name>)')
    parser.add_argument('--arms', nargs='*', help='only these arms (default: all)')
    parser.add_argument('--seeds', nargs='*', type=int, help='only these seeds (default: the campaign\'s)')
    parser.add_argument('--iters', type=int, help='override train.total_iter (and the cosine period): short trials')
    parser.add_argument('--threads', type=int, help='OMP_NUM_THREADS of the runs (default: inherited)')
    parser.add_argument('--no-eval', action='store_true', help='train only')
    parser.add_argument('--report', action='store_true', help='only rebuild the report from what is finished')
    parser.add_argument('--export', metavar='DIR', help='then copy the report and the finished runs\' small files '
                        '(scores, options, logs; no weights) to DIR, e.g. docs/results/<campaign>')
    args = parser.parse_args(argv)
    try:
        return run_campaign(args)
    except CampaignError as err:
        print(f'reproduce: error: {err}', file=sys.stderr)
        return 1


def run_campaign(args) -> int:
    import lrti_plugin  # noqa: F401  (shim before basicsr; registers the archs)
    from lrti_plugin.utils.options import load_options

    camp = load_campaign(args.campaign)
    if not os.path.isfile(camp['base']):
        raise CampaignError(f'{args.campaign}: base options file {camp["base"]!r} not found')
    base = load_options(camp['base'])
    out = os.path.abspath(args.out or os.path.join('results', 'reproduce', camp['name']))
    os.makedirs(out, exist_ok=True)
    state = State(os.path.join(out, 'campaign.json'))
    arms = args.arms or list(camp['arms'])
    for arm in arms:
        if arm not in camp['arms']:
            raise CampaignError(f'--arms: no arm {arm!r} in {args.campaign} (arms: {", ".join(camp["arms"])})')
    seeds = args.seeds if args.seeds is not None else camp['seeds']
    camp = {**camp, 'seeds': seeds}  # the report covers the seeds of this call
    tests = {k: {**v, **{p: os.path.abspath(v[p]) for p in ('lq', 'gt') if p in v}}
             for k, v in (camp.get('test') or {}).items()}
    for name, test in tests.items():
        for key in ('lq', 'gt'):
            if key in test and not os.path.isdir(test[key]):
                raise CampaignError(f'test.{name}.{key}: folder {test[key]} not found')

    if camp.get('reference') not in (None, BICUBIC) and not os.path.isfile(camp['reference']):
        raise CampaignError(f'{args.campaign}: reference weights {camp["reference"]!r} not found '
                            f'(a file, or {BICUBIC!r})')
    reference = {}
    if camp.get('reference') and tests and not args.no_eval and not args.report:
        reference = eval_run(os.path.join(out, 'reference'), base['network_g'], camp['reference'], tests, args.threads)
    elif camp.get('reference'):
        reference = {n: json.load(open(p)) for n in tests
                     if os.path.isfile(p := os.path.join(out, 'reference', f'eval_{n}.json'))}

    runs = {}
    for seed in seeds:
        for arm in arms:
            opt = arm_options(base, arm, camp['arms'][arm], seed, args.iters)
            run_dir = os.path.join(out, opt['name'])
            exp = experiment_dir(run_dir, opt['name'])
            weights = os.path.join(exp, 'models', 'net_g_latest.pth')
            record = state.run(opt['name'])
            scored = is_scored(run_dir, tests)
            if not args.report and not os.path.isfile(weights) and not scored:
                train_run(run_dir, opt, record, state, args.threads)
            info = {'frames_per_iter': supervised_frames(opt), 'total_iter': int(opt['train']['total_iter']),
                    'finished': os.path.isfile(weights) or scored}
            if os.path.isdir(exp):
                info['validation'], info['train_wall_s'] = parse_logs(exp)
            if (os.path.isfile(weights) or scored) and tests and not args.no_eval:
                if args.report or scored:
                    info['eval'] = {n: json.load(open(p)) for n in tests
                                    if os.path.isfile(p := os.path.join(run_dir, f'eval_{n}.json'))}
                else:
                    info['eval'] = eval_run(run_dir, opt['network_g'], weights, tests, args.threads)
            runs[(arm, seed)] = info
            build_report(camp, out, state, runs, reference)
    report = build_report(camp, out, state, runs, reference)
    print(open(os.path.join(out, 'report.md')).read())
    print(f'[reproduce] report: {out}/report.md, report.json, val_curves.png' + ''.join(
        f', per_frame_{t}.png' for t in tests))
    if args.export:
        copied = export_campaign(out, os.path.abspath(args.export), list(tests))
        print(f'[reproduce] exported {len(copied)} files to {args.export}')
    return 0 if report else 1


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup of the child on a TERM
    sys.exit(main())
