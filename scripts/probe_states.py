"""How big the recurrent states of trained networks get over whole test clips: the RMS of every branch's state at
every frame of one whole-sequence pass (no grad), one line per run.

A recurrent VSR network trained on short clips from zero states is never asked what its recurrence does after more
steps than a clip has; some seeds learn a state update that grows along the clip and the output collapses there
(docs/results.md, sections 1, 2 and 4). This probe shows whether that happened to a run: the same whole pass also
gives its per-frame Y-PSNR.

    python scripts/probe_states.py results/reproduce/scale2_basicvsr/{plain_short_s0,lrti_4clips_s0} \\
        --gt demo/data/heldout_png --out results/probe_states/scale2_s0

Each run is one of ``scripts/reproduce.py``'s run folders (``train.yml``, the network, and
``experiments/<name>/models/net_g_latest.pth``) or a training options file, whose weights are then read from
``experiments/<name>/models/net_g_latest.pth`` under the current folder (BasicSR's layout; ``make demo``'s
``demo/train_lrti.yml``, for instance). The LR frames are made from the GT frames exactly as the runner
makes them (x4 MATLAB-style bicubic). Writes ``states.json`` (per run and clip: each branch's RMS and the Y-PSNR at
every frame, in clip order) and ``states.png`` under ``--out``, and prints one line per run and clip.

``--state-max-rms 0.1 0.2 none`` probes every run again with each state bound (the archs' ``state_max_rms``; ``none``:
the network as trained); the runs are then named ``<name>@rms<bound>``. What a bound does to a trained network is
read here, on clips the settings may be chosen on, without retraining: the bound is not a weight.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reproduce_eval import CampaignError, bicubic_pair, build_net, frames_to_tensor, read_clip  # noqa: E402


def load_run(run: str):
    """(name, network options, weights path) of one reproduce run folder or training options file."""
    import yaml

    is_opt = run.endswith(('.yml', '.yaml'))
    opt_file = run if is_opt else os.path.join(run, 'train.yml')
    if not os.path.isfile(opt_file):
        raise CampaignError(f'{run}: no such options file' if is_opt else
                            f'{run}: no train.yml (not a scripts/reproduce.py run folder)')
    with open(opt_file) as f:
        opt = yaml.load(f, Loader=yaml.UnsafeLoader)  # the runner writes !!python/name tags
    if not isinstance(opt, dict) or 'network_g' not in opt or 'name' not in opt:
        raise CampaignError(f'{opt_file}: no network_g or name')
    root = os.getcwd() if is_opt else run
    weights = os.path.join(root, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
    if not os.path.isfile(weights):
        raise CampaignError(f'{weights}: missing (the run has not finished training)')
    return opt['name'], opt['network_g'], weights


def parse_bounds(values):
    """``--state-max-rms`` values: [None] when not given; else each a positive float or None (``none``)."""
    if values is None:
        return [None]
    bounds = []
    for v in values:
        try:
            b = None if v.lower() == 'none' else float(v)
        except ValueError:
            b = -1.0
        if b is not None and not b > 0:
            raise CampaignError(f"--state-max-rms: expected positive numbers or 'none', got {v!r}")
        bounds.append(b)
    return bounds


def with_bounds(run, bounds):
    """One (name, network options, weights) per bound: the options with ``state_max_rms`` set, the name tagged
    ``@rms<bound>`` (``@rmsnone`` for the network as trained) when a bound is asked for."""
    name, net_opt, weights = run
    if bounds == [None]:
        return [run]
    return [(f'{name}@rms{b if b is not None else "none"}', {**net_opt, 'state_max_rms': b}, weights) for b in bounds]


def read_pair(folder: str, max_frames=None):
    """(LR, GT) of one clip: LR a (T, 3, H/4, W/4) float tensor in [0, 1], RGB, made as the runner makes it (x4
    MATLAB-style bicubic of the GT cropped to a multiple of 4); GT those cropped BGR uint8 frames."""
    gts, lqs = bicubic_pair(read_clip(folder, max_frames))
    return frames_to_tensor(lqs), gts


def probe_clip(net, x, gts=None) -> tuple:
    """One whole pass over ``x`` (T, 3, h, w), no grad: (branch name -> the RMS of its state, i.e. its output
    features, at every frame in clip order (a backward branch reaches frame 0 last), and the per-frame Y-PSNR of
    the output against ``gts`` as the runner scores it (uint8 as ``tensor2img``, crop border 0), or None)."""
    import torch
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    from lrti_plugin.archs.propagation_util import sample_rms

    with torch.no_grad():
        out, states = net(x.unsqueeze(0), return_states=True)
    rms = {name: sample_rms(f[0].double()).tolist() for name, f in states.feats.items()}  # per frame
    psnr = None if gts is None else [float(calculate_psnr(tensor2img([o]), gt, 0, test_y_channel=True))
                                     for o, gt in zip(out[0], gts)]
    return rms, psnr


def plot(result: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    runs = list(result['runs'])
    clips = list(result['runs'][runs[0]]['clips'])
    branches = list(result['runs'][runs[0]]['clips'][clips[0]]['rms'])
    cols = len(branches) + 1
    fig, axes = plt.subplots(len(clips), cols, figsize=(4.2 * cols, 3.2 * len(clips)), squeeze=False)
    for r, clip in enumerate(clips):
        for run in runs:
            entry = result['runs'][run]['clips'][clip]
            for c, b in enumerate(branches):
                axes[r][c].semilogy(entry['rms'][b], label=run)
            axes[r][-1].plot(entry['psnr_y'], label=run)
        for c, b in enumerate(branches):
            axes[r][c].set_title(f'{clip}: {b} state RMS')
        axes[r][-1].set_title(f'{clip}: Y-PSNR per frame (whole pass)')
        for ax in axes[r]:
            ax.set_xlabel('frame index')
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='scripts/reproduce.py run folders (train.yml + experiments/) or '
                        'training options files (weights in ./experiments/<name>/)')
    parser.add_argument('--gt', required=True, help='folder of GT clip folders (the LR is made here, x4 bicubic)')
    parser.add_argument('--out', required=True, help='folder for states.json and states.png')
    parser.add_argument('--max-frames', type=int, default=None)
    parser.add_argument('--state-max-rms', nargs='+', default=None, metavar='B',
                        help="probe each run with each bound on the state RMS (a positive number or 'none')")
    parser.add_argument('--force', action='store_true', help='replace the states.json and states.png of --out')
    args = parser.parse_args(argv)
    try:
        done = os.path.join(args.out, 'states.json')
        if os.path.exists(done) and not args.force:
            raise CampaignError(f'{done}: exists (--force replaces it)')
        if not os.path.isdir(args.gt):
            raise CampaignError(f'{args.gt}: no such folder')
        clips = sorted(c for c in os.listdir(args.gt) if os.path.isdir(os.path.join(args.gt, c)))
        if not clips:
            raise CampaignError(f'{args.gt}: no clip folders')
        bounds = parse_bounds(args.state_max_rms)
        loaded = [bounded for run in args.runs for bounded in with_bounds(load_run(run), bounds)]  # checked first
        names = [name for name, _, _ in loaded]
        if len(set(names)) < len(names):
            raise CampaignError(f'two runs share one experiment name: {sorted(n for n in names if names.count(n) > 1)}')
        pairs = {clip: read_pair(os.path.join(args.gt, clip), args.max_frames) for clip in clips}
        result = {'gt': os.path.abspath(args.gt), 'runs': {}}
        for name, net_opt, weights in loaded:
            net = build_net(net_opt, weights)
            result['runs'][name] = {'weights': weights, 'clips': {}}
            for clip, (x, gts) in pairs.items():
                rms, psnr = probe_clip(net, x, gts)
                result['runs'][name]['clips'][clip] = {'rms': rms, 'psnr_y': psnr}
                print(f'[probe] {name} {clip}: Y-PSNR {sum(psnr) / len(psnr):.2f} (first 4 frames '
                      f'{sum(psnr[:4]) / 4:.2f}, last 4 {sum(psnr[-4:]) / 4:.2f}); ' + ', '.join(
                    f'{b} RMS first {v[0]:.3g} / max {max(v):.3g} (frame {v.index(max(v))}) / last {v[-1]:.3g}'
                    for b, v in rms.items()), flush=True)
    except CampaignError as e:
        print(f'[probe] error: {e}', file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'states.json'), 'w') as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, 'states.png'))
    print(f'[probe] wrote {os.path.join(args.out, "states.json")} and states.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
