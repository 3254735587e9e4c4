"""How big the recurrent states of trained networks get over whole test clips: the RMS of every branch's state at
every frame of one whole-sequence pass (no grad), one line per run.

A recurrent VSR network trained on short clips from zero states is never asked what its recurrence does after more
steps than a clip has; some seeds learn a state update that grows along the clip and the output collapses there
(docs/results.md, sections 1 and 4). This probe shows whether that happened to a run, next to its per-frame Y-PSNR
(read from the run's ``eval_<set>.json`` when ``scripts/reproduce.py`` has scored it).

    python scripts/probe_states.py results/reproduce/scale2_basicvsr/{plain_short_s0,lrti_4clips_s0} \\
        --gt demo/data/heldout_png --out results/probe_states/scale2_s0

Each run folder is one of ``scripts/reproduce.py``'s: ``train.yml`` (the network) and
``experiments/<name>/models/net_g_latest.pth``. The LR frames are made from the GT frames exactly as the runner
makes them (x4 MATLAB-style bicubic). Writes ``states.json`` (per run, clip and branch: the RMS at every frame, in
clip order) and ``states.png`` under ``--out`` and prints a table.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reproduce_eval import CampaignError, build_net, read_clip  # noqa: E402


def load_run(run_dir: str):
    """(name, network options, weights path) of one reproduce run folder."""
    import yaml

    opt_file = os.path.join(run_dir, 'train.yml')
    if not os.path.isfile(opt_file):
        raise CampaignError(f'{run_dir}: no train.yml (not a scripts/reproduce.py run folder)')
    with open(opt_file) as f:
        opt = yaml.load(f, Loader=yaml.UnsafeLoader)  # the runner writes !!python/name tags
    if not isinstance(opt, dict) or 'network_g' not in opt or 'name' not in opt:
        raise CampaignError(f'{opt_file}: no network_g or name')
    weights = os.path.join(run_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
    if not os.path.isfile(weights):
        raise CampaignError(f'{weights}: missing (the run has not finished training)')
    return opt['name'], opt['network_g'], weights


def lr_clip(folder: str, max_frames=None):
    """(T, 3, H/4, W/4) float tensor in [0, 1], RGB: the clip's x4 MATLAB-style bicubic LR, as the runner makes it."""
    import numpy as np
    import torch
    from basicsr.utils import img2tensor

    from lrti_plugin.data.lmdb_tools import bicubic_downscale

    gts = [g[:g.shape[0] // 4 * 4, :g.shape[1] // 4 * 4] for g in read_clip(folder, max_frames)]
    lqs = [bicubic_downscale(g, 4) for g in gts]
    return torch.stack(img2tensor([f.astype(np.float32) / 255.0 for f in lqs], bgr2rgb=True, float32=True))


def state_rms(net, x) -> dict:
    """Branch name -> the RMS of its state (output features) at every frame of one whole pass over ``x``
    (T, 3, h, w), in clip order (a backward branch reaches frame 0 last)."""
    import torch

    with torch.no_grad():
        states = net(x.unsqueeze(0), states_only=True)
    return {name: f[0].pow(2).mean(dim=(1, 2, 3)).sqrt().tolist() for name, f in states.feats.items()}


def per_frame_psnr(run_dir: str, test: str) -> dict:
    """Clip -> per-frame Y-PSNR of the run's whole-pass scoring on ``test`` (empty if not scored)."""
    path = os.path.join(run_dir, f'eval_{test}.json')
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {c: v['per_frame']['psnr_y'] for c, v in json.load(f)['clips'].items()}


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
            if entry.get('psnr_y'):
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
    parser.add_argument('runs', nargs='+', help='scripts/reproduce.py run folders (train.yml + experiments/)')
    parser.add_argument('--gt', required=True, help='folder of GT clip folders (the LR is made here, x4 bicubic)')
    parser.add_argument('--test', default='heldout', help="the runs' eval_<test>.json to read per-frame PSNR from")
    parser.add_argument('--out', required=True, help='folder for states.json and states.png')
    parser.add_argument('--max-frames', type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_grad_enabled(False)
    try:
        if not os.path.isdir(args.gt):
            raise CampaignError(f'{args.gt}: no such folder')
        clips = sorted(c for c in os.listdir(args.gt) if os.path.isdir(os.path.join(args.gt, c)))
        if not clips:
            raise CampaignError(f'{args.gt}: no clip folders')
        loaded = [(run_dir, *load_run(run_dir)) for run_dir in args.runs]  # check every run before any work
        xs = {clip: lr_clip(os.path.join(args.gt, clip), args.max_frames) for clip in clips}
        result = {'gt': os.path.abspath(args.gt), 'runs': {}}
        for run_dir, name, net_opt, weights in loaded:
            net = build_net(net_opt, weights)
            psnr = per_frame_psnr(run_dir, args.test)
            result['runs'][name] = {'weights': weights, 'clips': {}}
            for clip, x in xs.items():
                rms = state_rms(net, x)
                result['runs'][name]['clips'][clip] = {'rms': rms, 'psnr_y': psnr.get(clip)}
                print(f'[probe] {name} {clip}: ' + ', '.join(
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
