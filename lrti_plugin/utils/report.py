"""Scores and pictures a person would rather look at: SR vs bicubic vs GT, and training curves.

Used by ``scripts/run_demo.py``; works on any folder of SR frames saved by ``lrti_plugin.test``
(``<clip>/<frame:08d>_<suffix>.png``) next to GT clip folders (``<clip>/<frame:08d>.png``).
"""
import json
import os
import re
from typing import Dict, List

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize

# BasicSR's MessageLogger line: "[name..][epoch:  0, iter:     50, lr:(1.000e-03,)] [eta: ...] l_pix: 1.2e-01"
_ITER_RE = re.compile(r'iter:\s*([\d,]+).*?\]\s*\[eta.*?\]\s*(.*)$')
_LOSS_RE = re.compile(r'(l_\w+): ([-\d.e+]+)')
_VAL_RE = re.compile(r'# (psnr|ssim): ([\d.]+)')


def _read(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return img  # (H, W, 3) uint8 BGR


def bicubic_x4(gt_bgr: np.ndarray, scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(LR, bicubic-upscaled LR) of a GT frame with BasicSR's MATLAB-style ``imresize``, uint8 BGR."""
    lr = np.clip(np.round(imresize(gt_bgr.astype(np.float64) / 255.0, 1 / scale) * 255), 0, 255)
    up = np.clip(np.round(imresize(lr / 255.0, scale) * 255), 0, 255)
    return lr.astype(np.uint8), up.astype(np.uint8)


def score_heldout(gt_root: str, sr_root: str, suffix: str, scale: int = 4) -> dict:
    """PSNR/SSIM (RGB and Y, crop border 0) of the SR frames and of bicubic, per clip and mean of clips.

    Args:
        gt_root: folder of GT clip folders ``<clip>/<frame:08d>.png``.
        sr_root: folder of SR clip folders ``<clip>/<frame:08d>_<suffix>.png``.
        suffix: the SR file suffix (the test options' ``name`` or ``val.suffix``).
        scale: upscaling factor of the bicubic baseline.

    Returns:
        dict: ``{'clips': {clip: {...}}, 'mean': {...}, 'frames': {clip: [(lr, bic, sr, gt), ...]}}``;
        metric keys ``ours_psnr``, ``bicubic_psnr``, ``ours_ssim``, ``bicubic_ssim``, ``ours_psnr_y``,
        ``bicubic_psnr_y``. ``frames`` keeps the middle frame of each clip for pictures.
    """
    clips = sorted(d for d in os.listdir(gt_root) if os.path.isdir(os.path.join(gt_root, d)))
    if not clips:
        raise FileNotFoundError(f'no clip folders in {gt_root}')
    per_clip, frames = {}, {}
    for clip in clips:
        names = sorted(f for f in os.listdir(os.path.join(gt_root, clip)) if f.endswith('.png'))
        rows: List[Dict[str, float]] = []
        for i, name in enumerate(names):
            gt = _read(os.path.join(gt_root, clip, name))
            gt = gt[:gt.shape[0] - gt.shape[0] % scale, :gt.shape[1] - gt.shape[1] % scale]
            sr = _read(os.path.join(sr_root, clip, f'{os.path.splitext(name)[0]}_{suffix}.png'))
            if sr.shape != gt.shape:
                raise ValueError(f'{clip}/{name}: SR shape {sr.shape} != GT shape {gt.shape}')
            lr, bic = bicubic_x4(gt, scale)
            rows.append({
                'ours_psnr': calculate_psnr(sr, gt, 0), 'bicubic_psnr': calculate_psnr(bic, gt, 0),
                'ours_ssim': calculate_ssim(sr, gt, 0), 'bicubic_ssim': calculate_ssim(bic, gt, 0),
                'ours_psnr_y': calculate_psnr(sr, gt, 0, test_y_channel=True),
                'bicubic_psnr_y': calculate_psnr(bic, gt, 0, test_y_channel=True),
            })
            if i == len(names) // 2:
                frames[clip] = (lr, bic, sr, gt)
        per_clip[clip] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {'frames': len(rows)}
    keys = [k for k in per_clip[clips[0]] if k != 'frames']
    mean = {k: float(np.mean([per_clip[c][k] for c in clips])) for k in keys}
    return {'clips': per_clip, 'mean': mean, 'frames': frames}


def comparison_image(frames: dict, crop: int = 96) -> np.ndarray:
    """One row per clip: LR (nearest x4) | bicubic | ours | GT, a centre crop of ``crop`` GT pixels."""
    rows = []
    for _, (lr, bic, sr, gt) in sorted(frames.items()):
        h, w = gt.shape[:2]
        y, x = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
        lr_up = cv2.resize(lr, (w, h), interpolation=cv2.INTER_NEAREST)
        tiles = [img[y:y + crop, x:x + crop] for img in (lr_up, bic, sr, gt)]
        tiles = [cv2.resize(t, (2 * crop, 2 * crop), interpolation=cv2.INTER_NEAREST) for t in tiles]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, label in enumerate(('LR (nearest)', 'bicubic', 'ours', 'GT')):
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


def plot_training_curve(log_path: str, png_path: str, bicubic_psnr: float | None = None) -> str:
    """Training loss and validation PSNR against iterations, as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = parse_train_log(log_path)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, pts in curves['loss'].items():
        ax_loss.plot(*zip(*pts), label=name)
    ax_loss.set(xlabel='iteration', ylabel='training loss', yscale='log', title='Training loss')
    ax_loss.legend()
    if curves['val'].get('psnr'):
        ax_val.plot(*zip(*curves['val']['psnr']), 'o-', label='model')
    if bicubic_psnr is not None:
        ax_val.axhline(bicubic_psnr, color='gray', linestyle='--', label='bicubic')
    ax_val.set(xlabel='iteration', ylabel='PSNR (dB, RGB)', title='Held-out validation')
    ax_val.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def write_report(out_dir: str, scores: dict, experiment_dir: str, train_seconds: float, train_opt: dict) -> str:
    """Write ``report.md``, ``report.json``, ``comparison.png`` and ``training_curve.png`` into ``out_dir``."""
    logs = sorted(f for f in os.listdir(experiment_dir) if f.startswith('train_') and f.endswith('.log'))
    if not logs:
        raise FileNotFoundError(f'no training log in {experiment_dir}')
    curve = plot_training_curve(os.path.join(experiment_dir, logs[-1]), os.path.join(out_dir, 'training_curve.png'),
                                scores['mean']['bicubic_psnr'])
    cv2.imwrite(os.path.join(out_dir, 'comparison.png'), comparison_image(scores['frames']))
    net = train_opt['network_g']
    summary = {
        'network': dict(net), 'total_iter': train_opt['train']['total_iter'],
        'clip_frames': train_opt['datasets']['train']['num_frame'], 'train_seconds': round(train_seconds, 1),
        'clips': scores['clips'], 'mean_of_clips': scores['mean'],
    }
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    m = scores['mean']
    lines = [
        '# lrti_plugin demo report', '',
        f"Network: `{net['type']}` ({', '.join(f'{k}={v}' for k, v in net.items() if k != 'type')}); "
        f"{summary['total_iter']} iterations on {summary['clip_frames']}-frame clips; "
        f'training took {train_seconds:.0f} s.', '',
        'Held-out clips (photos never seen in training), x4 MATLAB-bicubic degradation, whole clips, crop '
        'border 0; mean over frames per clip, then over clips.', '',
        '| clip | frames | bicubic PSNR | ours PSNR | bicubic SSIM | ours SSIM | bicubic Y-PSNR | ours Y-PSNR |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for clip, s in scores['clips'].items():
        lines.append(f"| {clip} | {s['frames']} | {s['bicubic_psnr']:.2f} | {s['ours_psnr']:.2f} | "
                     f"{s['bicubic_ssim']:.4f} | {s['ours_ssim']:.4f} | {s['bicubic_psnr_y']:.2f} | "
                     f"{s['ours_psnr_y']:.2f} |")
    lines.append(f"| **mean** | | {m['bicubic_psnr']:.2f} | **{m['ours_psnr']:.2f}** | {m['bicubic_ssim']:.4f} | "
                 f"**{m['ours_ssim']:.4f}** | {m['bicubic_psnr_y']:.2f} | **{m['ours_psnr_y']:.2f}** |")
    verdict = 'beats' if m['ours_psnr'] > m['bicubic_psnr'] else 'does NOT beat'
    lines += ['', f"The model {verdict} bicubic by {m['ours_psnr'] - m['bicubic_psnr']:+.2f} dB (RGB PSNR).", '',
              '![LR / bicubic / ours / GT](comparison.png)', '', f'![training curve]({os.path.basename(curve)})', '']
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path
