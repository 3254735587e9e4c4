"""Score SR frames against ground truth as they stream out of :mod:`lrti_plugin.infer` (``--gt``).

Per frame: PSNR and SSIM on RGB and on the Y channel (BasicSR's ``calculate_psnr``/``calculate_ssim``, which
the field's tables use; ``crop_border`` pixels dropped at each edge), and tOF, the temporal flow error of
TecoGAN: the mean end-point distance between the optical flow of consecutive SR frames and that of the
consecutive GT frames (OpenCV's Farneback flow on the grey frames: no weights to download). Memory stays
bounded: the scorer keeps the previous frame pair and three crops.

Writes into a report folder: ``scores.json`` (per frame and means), ``scores.csv`` (one row per frame),
``psnr_per_frame.png`` and ``comparison.png`` (crops of the first, middle and last frame: bilinear x4 input,
SR, GT).
"""
import csv
import json
import os
from typing import Dict, List, Optional

import numpy as np

METRICS = ('psnr', 'ssim', 'psnr_y', 'ssim_y', 'tof')


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 2) Farneback flow from grey frame ``a`` to ``b`` (OpenCV's usual parameters)."""
    import cv2

    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def frame_scores(sr: np.ndarray, gt: np.ndarray, crop_border: int = 0) -> Dict[str, float]:
    """PSNR/SSIM (RGB and Y) of one (H, W, 3) uint8 RGB SR frame against its GT."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    sr_bgr, gt_bgr = sr[:, :, ::-1], gt[:, :, ::-1]  # BasicSR's Y conversion expects BGR
    return {'psnr': float(calculate_psnr(sr_bgr, gt_bgr, crop_border)),
            'ssim': float(calculate_ssim(sr_bgr, gt_bgr, crop_border)),
            'psnr_y': float(calculate_psnr(sr_bgr, gt_bgr, crop_border, test_y_channel=True)),
            'ssim_y': float(calculate_ssim(sr_bgr, gt_bgr, crop_border, test_y_channel=True))}


class GtScorer:
    """Accumulates per-frame scores of a stream of SR frames against GT frames of the same size.

    Args:
        names (list[str]): frame names (for the CSV).
        crop_border (int): pixels dropped at each edge for PSNR/SSIM.
        crop (int): side of the comparison crops, in SR pixels.
    """

    def __init__(self, names: List[str], crop_border: int = 0, crop: int = 128):
        self.names, self.crop_border, self.crop = names, crop_border, crop
        self.rows: List[Dict[str, float]] = []
        self._prev: Optional[tuple] = None
        self._crops: List[tuple] = []
        self._keep = sorted({0, (len(names) - 1) // 2, len(names) - 1})

    def add(self, sr: np.ndarray, gt: np.ndarray, lr: np.ndarray) -> Dict[str, float]:
        """Score frame ``len(self.rows)``: (sH, sW, 3) uint8 RGB SR and GT, (H, W, 3) LR input."""
        row = frame_scores(sr, gt, self.crop_border)
        grey = (_grey(sr), _grey(gt))
        row['tof'] = float('nan')
        if self._prev is not None:
            diff = farneback(self._prev[0], grey[0]) - farneback(self._prev[1], grey[1])
            row['tof'] = float(np.sqrt((diff ** 2).sum(-1)).mean())
        self._prev = grey
        index = len(self.rows)
        if index in self._keep:
            self._crops.append((index, *self._cut(sr, gt, lr)))
        self.rows.append(row)
        return row

    def _cut(self, sr, gt, lr):
        import cv2

        h, w = sr.shape[:2]
        c = min(self.crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        up = cv2.resize(lr, (w, h), interpolation=cv2.INTER_LINEAR)
        return tuple(x[top:top + c, left:left + c] for x in (up, sr, gt))

    def summary(self) -> Dict[str, float]:
        """Mean of each metric over the frames (tOF over the frame pairs)."""
        out = {}
        for key in METRICS:
            values = [r[key] for r in self.rows if not np.isnan(r[key])]
            out[key] = float(np.mean(values)) if values else float('nan')
        return out

    def write(self, folder: str, title: str = '') -> Dict[str, float]:
        """scores.json, scores.csv, psnr_per_frame.png, comparison.png into ``folder``; returns the means."""
        os.makedirs(folder, exist_ok=True)
        mean = self.summary()
        frames = [{'frame': n, **r} for n, r in zip(self.names, self.rows)]
        with open(os.path.join(folder, 'scores.json'), 'w') as f:  # tOF of frame 0 (no pair) is null
            json.dump({'mean': _nan_to_none(mean), 'crop_border': self.crop_border,
                       'frames': [_nan_to_none(r) for r in frames]}, f, indent=1, allow_nan=False)
        with open(os.path.join(folder, 'scores.csv'), 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=['frame', *METRICS])
            writer.writeheader()
            writer.writerows(frames)
        self._plots(folder, title, mean)
        return mean

    def _plots(self, folder: str, title: str, mean: Dict[str, float]) -> None:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.2))
        ax.plot(range(len(self.rows)), [r['psnr'] for r in self.rows], label=f'RGB (mean {mean["psnr"]:.2f} dB)')
        ax.plot(range(len(self.rows)), [r['psnr_y'] for r in self.rows], label=f'Y (mean {mean["psnr_y"]:.2f} dB)')
        ax.set_xlabel('frame index')
        ax.set_ylabel('PSNR (dB)')
        ax.set_title(title or 'PSNR per frame')
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, 'psnr_per_frame.png'), dpi=100)
        plt.close(fig)
        fig, axes = plt.subplots(len(self._crops), 3, figsize=(9, 3 * len(self._crops)), squeeze=False)
        for row, (index, up, sr, gt) in zip(axes, self._crops):
            for ax, img, name in zip(row, (up, sr, gt), ('input, bilinear x4', 'SR', 'GT')):
                ax.imshow(img)
                score = f' ({self.rows[index]["psnr"]:.2f} dB)' if name == 'SR' else ''
                ax.set_title(f'{name}, frame {index}{score}')
                ax.axis('off')
        fig.tight_layout()
        fig.savefig(os.path.join(folder, 'comparison.png'), dpi=100)
        plt.close(fig)


def _nan_to_none(d: Dict) -> Dict:
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}
