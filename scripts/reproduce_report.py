"""The report half of ``scripts/reproduce.py``: the markdown table and the plots of a campaign."""
import os

from reproduce_eval import BICUBIC


def write_markdown(camp: dict, out: str, report: dict) -> str:
    lines = [f'# Campaign `{camp["name"]}`', '', f'Seeds {camp["seeds"]}; mean ± sample std over the seeds that '
             'finished (their count in brackets; no spread with one); per-seed values last. Seconds per supervised '
             'frame and wall times include validation and are comparable only between runs that had the machine '
             'to themselves. Peak RSS is the training process\'s own high-water mark (VmHWM; data-loader workers '
             'not included), recorded since 2026-12-07; blank for runs recorded before (the figure recorded then '
             'included the runner\'s own peak).', '']
    arms = report['arms']
    base = arms[report['cost_baseline']]['label'] if report.get('cost_baseline') else ''
    machines = {}
    for arm, entry in arms.items():
        for seed, run in entry['seeds'].items():
            if run['segments']:  # runs not started yet have none
                machines.setdefault(run.get('machine') or 'not recorded', []).append(f'{arm}_s{seed}')
    if len(machines) > 1:
        lines += [f'The runs did not all train on one machine, so the seconds per supervised frame mix machines; the '
                  f'cost column "× {base}" divides each run by {base} of the same seed on the same machine (runs '
                  'with no recorded machine are taken to share one) and averages over seeds:', '']
        lines += [f'- {name}: {", ".join(sorted(runs))}' for name, runs in sorted(machines.items())] + ['']
    for test in camp.get('test') or {}:
        lines += [f'## {test}', '', '| arm | Y-PSNR | Y-SSIM | RGB PSNR | Δ Y-PSNR vs reference | s / supervised frame '
                  f'| cost × {base} | peak RSS (MiB) | per seed (Y-PSNR) |', '|---|---|---|---|---|---|---|---|---|']
        ref = (report['reference'] or {}).get(test)
        if ref:
            m = ref['mean_of_clips']
            what = BICUBIC if camp.get('reference') == BICUBIC else 'untouched weights'
            lines.append(f'| reference ({what}) | {m["psnr_y"]:.4f} | {m["ssim_y"]:.4f} | {m["psnr"]:.4f} '
                         '| 0 | | | | |')
        for entry in arms.values():
            s = entry['summary'].get(test)
            if not s:
                lines.append(f'| {entry["label"]} | (not scored yet) | | | | | | | |')
                continue
            delta = f'{s["psnr_y"]["mean"] - ref["mean_of_clips"]["psnr_y"]:+.4f}' if ref else ''
            cost = entry['summary']['sec_per_supervised_frame']
            per_seed = ', '.join(f's{k}: {v["eval"][test]["psnr_y"]:.4f}' for k, v in entry['seeds'].items()
                                 if test in v['eval'])
            rel = entry.get('relative_cost')
            rel_cell = (f'{rel["mean"]:.2f}' + (f' ± {rel["std"]:.2f} ({rel["n"]})' if rel['n'] > 1 else ' (1)')
                        if rel else '')
            peak = entry['summary']['peak_rss_mib']
            cost_cells = (f'{cost["mean"]:.3f} | {rel_cell} | {"" if peak is None else f"{peak:.0f}"}' if cost
                          else ' | | ')
            spread = f' ± {s["psnr_y"]["std"]:.4f}' if s['psnr_y']['n'] > 1 else ''
            lines.append(f'| {entry["label"]} | {s["psnr_y"]["mean"]:.4f}{spread} '
                         f'({s["psnr_y"]["n"]}) | {s["ssim_y"]["mean"]:.4f} | {s["psnr"]["mean"]:.4f} | {delta} | '
                         f'{cost_cells} | {per_seed} |')
        lines.append('')
        pairs = [c for c in report.get('comparisons', []) if c['test'] == test]
        if pairs:
            lines += [f'Paired by seed ({test}, Y-PSNR of the mean over clips; t and two-sided p of the paired '
                      'differences, Student t with seeds - 1 degrees of freedom):', '',
                      '| A − B | per seed | mean ± std | t | p | (clip, seed) pairs with A ahead |',
                      '|---|---|---|---|---|---|']
            for c in pairs:
                per_seed = ', '.join(f's{k}: {d:+.4f}' for k, d in zip(c['seeds'], c['diffs']))
                spread = f' ± {c["std"]:.4f}' if len(c['seeds']) > 1 else ''
                t = f'{c["t"]:.2f} ({len(c["seeds"]) - 1})' if c['t'] is not None else ''
                p = f'{c["p"]:.3f}' if c['p'] is not None else ''
                lines.append(f'| {arms[c["a"]]["label"]} − {arms[c["b"]]["label"]} | {per_seed} | '
                             f'{c["mean"]:+.4f}{spread} | {t} | {p} | {c["clips_ahead"]} of {c["clips"]} |')
            lines.append('')
    path = os.path.join(out, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def _plt():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def plot_validation(out: str, report: dict) -> str:
    """Validation PSNR against iterations and against training wall time: one line per arm (mean over
    seeds at each validation), band from the lowest to the highest seed."""
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for entry in report['arms'].values():
        curves = [s['validation'] for s in entry['seeds'].values() if s['validation']]
        if not curves:
            continue
        metric = 'psnr' if 'psnr' in curves[0][0]['metrics'] else next(iter(curves[0][0]['metrics']))
        n = min(len(c) for c in curves)
        its = np.array([c[i]['iter'] for c in curves for i in range(n)]).reshape(len(curves), n).mean(0)
        walls = np.array([[c[i]['wall_s'] for i in range(n)] for c in curves]).mean(0) / 60
        vals = np.array([[c[i]['metrics'][metric] for i in range(n)] for c in curves])
        for ax, x in zip(axes, (its, walls)):
            line, = ax.plot(x, vals.mean(0), 'o-', label=entry['label'])
            if len(curves) > 1:
                ax.fill_between(x, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel='iteration', ylabel='validation PSNR (dB)', title='Validation PSNR vs iterations')
    axes[1].set(xlabel='training wall time (min)', ylabel='validation PSNR (dB)', title='... vs wall-clock time')
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, 'val_curves.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_frame(out: str, test: str, runs: dict, reference: dict) -> str:
    """Y-PSNR per frame index of each test clip: one line per arm (mean over seeds), and the reference."""
    import numpy as np

    plt = _plt()
    per_arm = {}
    for (arm, _seed), info in runs.items():
        ev = info.get('eval', {}).get(test)
        if ev:
            per_arm.setdefault(arm, []).append(ev['clips'])
    if reference and test in reference:
        per_arm = {'reference': [reference[test]['clips']], **per_arm}
    clips = sorted({c for seeds in per_arm.values() for s in seeds for c in s})
    if not clips:
        return ''
    fig, axes = plt.subplots(1, len(clips), figsize=(4.2 * len(clips), 3.4), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        for arm, seeds in per_arm.items():
            vals = [s[clip]['per_frame']['psnr_y'] for s in seeds if clip in s]
            if vals:
                n = min(len(v) for v in vals)
                ax.plot(np.arange(n), np.mean([v[:n] for v in vals], axis=0), label=arm,
                        linestyle='--' if arm == 'reference' else '-')
        ax.set(title=clip, xlabel='frame index', ylabel='Y-PSNR (dB)')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f'per_frame_{test}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
