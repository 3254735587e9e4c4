"""Scores and pictures of the demo: bicubic and every trained arm against the GT, and their curves.

Works on folders of SR frames saved by ``lrti_plugin.test`` (``<clip>/<frame:08d>_<suffix>.png``) next to
GT clip folders (``<clip>/<frame:08d>.png``). Metrics: BasicSR's PSNR/SSIM on uint8 frames, RGB and Y,
crop border 0; mean over the frames of a clip, then over clips.
"""
import json
import os
import re
from typing import Dict, Mapping, Tuple

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize

from lrti_plugin.data.lmdb_tools import bicubic_downscale

# BasicSR's MessageLogger line: "[name..][epoch:  0, iter:     50, lr:(1.000e-03,)] [eta: ...] l_pix: 1.2e-01"
_ITER_RE = re.compile(r'iter:\s*([\d,]+).*?\]\s*\[eta.*?\]\s*(.*)$')
_LOSS_RE = re.compile(r'(l_\w+): ([-\d.e+]+)')
_VAL_RE = re.compile(r'# (psnr|ssim): ([\d.]+)')
METRICS = ('psnr', 'ssim', 'psnr_y')


def _read(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return img  # (H, W, 3) uint8 BGR


def bicubic_x4(gt_bgr: np.ndarray, scale: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """(LR, bicubic-upscaled LR) of a GT frame, both with BasicSR's MATLAB-style ``imresize``, uint8 BGR: the
    LR is exactly the one in the LMDBs (``bicubic_downscale``)."""
    lr = bicubic_downscale(gt_bgr, scale)
    up = np.clip(np.round(imresize(lr / 255.0, scale) * 255), 0, 255)
    return lr, up.astype(np.uint8)


def _scores(sr: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
    return {'psnr': calculate_psnr(sr, gt, 0), 'ssim': calculate_ssim(sr, gt, 0),
            'psnr_y': calculate_psnr(sr, gt, 0, test_y_channel=True)}


def score_arms(gt_root: str, arms: Mapping[str, Tuple[str, str]], scale: int = 4) -> dict:
    """Score bicubic and every arm's SR frames against the GT clips.

    Args:
        gt_root: folder of GT clip folders ``<clip>/<frame:08d>.png``.
        arms: arm name -> (folder of SR clip folders, file suffix): frames ``<clip>/<frame:08d>_<suffix>.png``.
        scale: upscaling factor.

    Returns:
        dict: ``clips`` {clip: {arm: {psnr, ssim, psnr_y, per_frame_psnr}}} with ``bicubic`` as an arm,
        ``mean`` {arm: {psnr, ssim, psnr_y}} (mean of clips), ``frames`` {clip: {lr, bicubic, <arm>..., gt}}
        (the middle frame of each clip, BGR uint8, for pictures).
    """
    clips = sorted(d for d in os.listdir(gt_root) if os.path.isdir(os.path.join(gt_root, d)))
    if not clips:
        raise FileNotFoundError(f'no clip folders in {gt_root}')
    names = ['bicubic', *arms]
    per_clip, frames = {}, {}
    for clip in clips:
        files = sorted(f for f in os.listdir(os.path.join(gt_root, clip)) if f.endswith('.png'))
        rows = {arm: [] for arm in names}
        for i, name in enumerate(files):
            gt = _read(os.path.join(gt_root, clip, name))
            gt = gt[:gt.shape[0] - gt.shape[0] % scale, :gt.shape[1] - gt.shape[1] % scale]
            lr, bic = bicubic_x4(gt, scale)
            images = {'bicubic': bic}
            for arm, (root, suffix) in arms.items():
                images[arm] = _read(os.path.join(root, clip, f'{os.path.splitext(name)[0]}_{suffix}.png'))
                if images[arm].shape != gt.shape:
                    raise ValueError(f'{arm}: {clip}/{name}: SR shape {images[arm].shape} != GT shape {gt.shape}')
            for arm in names:
                rows[arm].append(_scores(images[arm], gt))
            if i == len(files) // 2:
                frames[clip] = {'lr': lr, **images, 'gt': gt}
        per_clip[clip] = {arm: {**{k: float(np.mean([r[k] for r in rows[arm]])) for k in METRICS},
                                'per_frame_psnr': [float(r['psnr']) for r in rows[arm]]} for arm in names}
    mean = {arm: {k: float(np.mean([per_clip[c][arm][k] for c in clips])) for k in METRICS} for arm in names}
    return {'clips': per_clip, 'mean': mean, 'frames': frames}


def score_chunked(net, gt_root: str, chunk: int, scale: int = 4) -> dict:
    """Score ``net`` run on independent chunks of ``chunk`` frames (each from zero states) of every GT clip.

    The LR is made from the GT exactly as the LMDBs hold it (``bicubic_downscale``). Returns
    ``{'clips': {clip: {psnr, ssim, psnr_y}}, 'mean': {psnr, ssim, psnr_y}}`` (mean of clips).
    """
    import torch
    from basicsr.utils import img2tensor, tensor2img

    clips = {}
    param = next(net.parameters())
    for clip in sorted(d for d in os.listdir(gt_root) if os.path.isdir(os.path.join(gt_root, d))):
        files = sorted(f for f in os.listdir(os.path.join(gt_root, clip)) if f.endswith('.png'))
        gts = [_read(os.path.join(gt_root, clip, f)) for f in files]
        gts = [g[:g.shape[0] - g.shape[0] % scale, :g.shape[1] - g.shape[1] % scale] for g in gts]
        lqs = torch.stack(img2tensor([bicubic_downscale(g, scale).astype(np.float32) / 255 for g in gts]))
        rows = []
        with torch.no_grad():
            for start in range(0, len(gts), chunk):
                out = net(lqs[start:start + chunk].unsqueeze(0).to(param))[0]
                rows += [_scores(tensor2img([o]), gts[start + i]) for i, o in enumerate(out)]
        clips[clip] = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    return {'clips': clips, 'mean': {k: float(np.mean([c[k] for c in clips.values()])) for k in METRICS}}


def textured_crop(gt: np.ndarray, crop: int) -> Tuple[int, int]:
    """Top-left (y, x) of the ``crop``-pixel square of the GT with the most detail (Laplacian energy):
    chosen from the GT alone, never from the results."""
    grey = cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = cv2.boxFilter(np.abs(cv2.Laplacian(grey, cv2.CV_32F)), -1, (crop, crop), normalize=True)
    h, w = grey.shape
    half = crop // 2
    valid = energy[half:h - crop + half + 1, half:w - crop + half + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


def comparison_image(frames: dict, order: Tuple[str, ...], crop: int = 96) -> np.ndarray:
    """One row per clip: ``order`` side by side (e.g. bicubic | plain | lrti | gt), the most textured crop
    of ``crop`` GT pixels, each shown at 2x (nearest)."""
    rows = []
    for clip in sorted(frames):
        images = frames[clip]
        y, x = textured_crop(images['gt'], crop)
        tiles = [cv2.resize(images[k][y:y + crop, x:x + crop], (2 * crop, 2 * crop), interpolation=cv2.INTER_NEAREST)
                 for k in order]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, label in enumerate(order):
        cv2.putText(header, label, (i * (2 * crop + 4) + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([header, *rows], 0)


def parse_train_log(log_path: str) -> dict:
    """Losses and validation metrics from a BasicSR training log: ``{'loss': {name: [(iter, v)]}, 'val': ...}``."""
    losses: Dict[str, list] = {}
    vals: Dict[str, list] = {}
    last_iter = 0
    with open(log_path) as f:
        for line in f:
            m = _ITER_RE.search(line)
            if m:
                last_iter = int(m.group(1).replace(',', ''))
                for name, value in _LOSS_RE.findall(m.group(2)):
                    losses.setdefault(name, []).append((last_iter, float(value)))
                continue
            m = _VAL_RE.search(line)
            if m:
                vals.setdefault(m.group(1), []).append((last_iter, float(m.group(2))))
    return {'loss': losses, 'val': vals}


def _plt():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(logs: Mapping[str, str], png_path: str) -> str:
    """Training loss of every arm against iterations (one line per arm), as a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arm, log in logs.items():
        pts = parse_train_log(log)['loss'].get('l_pix')
        if pts:
            ax.plot(*zip(*pts), label=arm)
    ax.set(xlabel='iteration', ylabel='training loss (Charbonnier)', yscale='log', title='Training loss')
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def plot_per_frame(scores: dict, png_path: str) -> str:
    """RGB PSNR per frame index of each held-out clip: one line per arm, bicubic dashed."""
    plt = _plt()
    clips = sorted(scores['clips'])
    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 3.4), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        for arm, s in scores['clips'][clip].items():
            ax.plot(s['per_frame_psnr'], '--' if arm == 'bicubic' else '-', label=arm)
        ax.set(title=clip, xlabel='frame index', ylabel='PSNR (dB, RGB)')
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def write_report(out_dir: str, scores: dict, logs: Mapping[str, str], train_seconds: Mapping[str, float],
                 settings: Mapping[str, str], chunked: Mapping[str, dict] | None = None, chunk: int = 0,
                 bounded: Mapping[str, dict] | None = None, state_max_rms: float | None = None) -> str:
    """Write ``report.md``, ``report.json``, ``comparison.png``, ``per_frame.png`` and ``training_curve.png``.

    ``report.json`` holds, under ``bicubic`` and under each arm name, ``{"psnr": ..., "ssim": ...}`` (mean
    held-out RGB PSNR/SSIM of whole-clip passes; ``chunked_psnr``/``chunked_ssim`` for the arms scored in
    independent ``chunk``-frame chunks; ``bounded_psnr``/``bounded_ssim`` for the arms scored in whole-clip
    passes with their states bounded at RMS ``state_max_rms``, also stored), and ``clips``, ``per_frame_psnr``,
    ``train_seconds``, ``settings``.
    """
    chunked, bounded = chunked or {}, bounded or {}
    arms = [a for a in scores['mean'] if a != 'bicubic']
    order = ('bicubic', *arms, 'gt')
    cv2.imwrite(os.path.join(out_dir, 'comparison.png'), comparison_image(scores['frames'], order))
    plot_per_frame(scores, os.path.join(out_dir, 'per_frame.png'))
    plot_training_curves(logs, os.path.join(out_dir, 'training_curve.png'))
    m = scores['mean']
    summary = {arm: {'psnr': m[arm]['psnr'], 'ssim': m[arm]['ssim'], 'psnr_y': m[arm]['psnr_y']}
               for arm in ('bicubic', *arms)}
    for arm, res in chunked.items():
        summary[arm].update(chunked_psnr=res['mean']['psnr'], chunked_ssim=res['mean']['ssim'])
    for arm, res in bounded.items():
        summary[arm].update(bounded_psnr=res['mean']['psnr'], bounded_ssim=res['mean']['ssim'])
    summary.update(chunk=chunk, state_max_rms=state_max_rms if bounded else None,
                   clips={c: {a: {k: v for k, v in s.items() if k != 'per_frame_psnr'} for a, s in arms_.items()}
                          for c, arms_ in scores['clips'].items()},
                   per_frame_psnr={c: {a: s['per_frame_psnr'] for a, s in arms_.items()}
                                   for c, arms_ in scores['clips'].items()},
                   train_seconds={a: round(s, 1) for a, s in train_seconds.items()}, settings=dict(settings),
                   train_logs=dict(logs))
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    lines = ['# lrti_plugin demo report', '']
    lines += [f'- **{k}**: {v}' for k, v in settings.items()] + ['']
    lines += ['Held-out clips (photos never seen in training), x4 MATLAB-bicubic degradation, each clip in one '
              'whole pass, crop border 0; mean over the frames of a clip, then over clips.', '',
              '| clip | frames | ' + ' | '.join(f'{a} PSNR' for a in ('bicubic', *arms)) + ' | '
              + ' | '.join(f'{a} SSIM' for a in ('bicubic', *arms)) + ' |',
              '|---|---|' + '---|' * (2 * (len(arms) + 1))]
    for clip, s in scores['clips'].items():
        n = len(s['bicubic']['per_frame_psnr'])
        lines.append(f'| {clip} | {n} | ' + ' | '.join(f"{s[a]['psnr']:.2f}" for a in ('bicubic', *arms)) + ' | '
                     + ' | '.join(f"{s[a]['ssim']:.4f}" for a in ('bicubic', *arms)) + ' |')
    lines.append('| **mean** | | ' + ' | '.join(f"**{m[a]['psnr']:.2f}**" for a in ('bicubic', *arms)) + ' | '
                 + ' | '.join(f"{m[a]['ssim']:.4f}" for a in ('bicubic', *arms)) + ' |')
    lines.append('')
    if chunked:
        lines += [f'Each arm also run on independent {chunk}-frame chunks of the same clips (every chunk from zero '
                  'states, the clip length both arms train on): a whole-clip PSNR well below the chunked one means '
                  'the recurrence degrades over long clips; above it, that it uses long-range information.', '',
                  '| arm | whole-clip PSNR | chunked PSNR | whole minus chunked |', '|---|---|---|---|']
        for arm, res in chunked.items():
            lines.append(f"| {arm} | {m[arm]['psnr']:.2f} | {res['mean']['psnr']:.2f} | "
                         f"{m[arm]['psnr'] - res['mean']['psnr']:+.2f} |")
        lines.append('')
    if bounded:
        lines += [f'Each arm also run in one whole pass with every recurrent state bounded at RMS {state_max_rms:g} '
                  '(the archs\' `state_max_rms`, applied at test time only; the demo\'s default, 0.1, was chosen on '
                  'the validation clips, docs/results.md section 2): what is left of each arm once no state can '
                  'grow.', '',
                  '| arm | whole-clip PSNR | bounded whole-clip PSNR | bounded SSIM |', '|---|---|---|---|']
        for arm, res in bounded.items():
            lines.append(f"| {arm} | {m[arm]['psnr']:.2f} | {res['mean']['psnr']:.2f} | {res['mean']['ssim']:.4f} |")
        if {'plain', 'lrti'} <= set(bounded):
            gap = bounded['lrti']['mean']['psnr'] - bounded['plain']['mean']['psnr']
            lines += ['', f'LRTI minus plain, both bounded: {gap:+.3f} dB RGB PSNR.']
        lines.append('')
    for arm in arms:
        verdict = 'beats' if m[arm]['psnr'] > m['bicubic']['psnr'] else 'does NOT beat'
        lines.append(f"- `{arm}` {verdict} bicubic by {m[arm]['psnr'] - m['bicubic']['psnr']:+.2f} dB (RGB PSNR); "
                     f'trained in {train_seconds.get(arm, 0):.0f} s.')
    if {'plain', 'lrti'} <= set(arms):
        lines.append(f"- LRTI minus plain: {m['lrti']['psnr'] - m['plain']['psnr']:+.3f} dB RGB PSNR, "
                     f"{m['lrti']['psnr_y'] - m['plain']['psnr_y']:+.3f} dB Y-PSNR (one seed; as measured).")
    lines += ['', f'![{" / ".join(order)}](comparison.png)', '', '![PSNR per frame](per_frame.png)', '',
              '![training loss](training_curve.png)', '']
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path
