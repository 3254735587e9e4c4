"""Tiny synthetic clips for the data tests (written into tmp_path; nothing binary is committed).

Importing this module imports ``lrti_plugin`` (the torchvision shim), so test modules that import it
before basicsr (isort puts ``_clip_fixtures`` ahead of ``basicsr``) can import basicsr safely.
"""
from pathlib import Path

import cv2
import numpy as np

import lrti_plugin  # noqa: F401  (must precede the first basicsr import)

SHARED_DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data'


def frame(h: int, w: int, index: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (so that a shift shows) whose mean encodes ``index`` (8 levels a frame)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 120, size=(max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(tex + 8 * index + 20, 0, 255).astype(np.uint8)


def write_clip(root: Path, name: str, num: int, h: int, w: int, names=None, seed: int = 0) -> list:
    """Write ``num`` frames ``<root>/<name>/<frame>.png``; returns the uint8 BGR frames."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f'{i:08d}.png' for i in range(num)]
    imgs = []
    for i, fname in enumerate(names):
        img = frame(h, w, i, seed=seed + i)
        assert cv2.imwrite(str(folder / fname), img)
        imgs.append(img)
    return imgs


def write_pair(root: Path, clips: dict, scale: int = 4) -> tuple:
    """GT under ``root/gt`` and its MATLAB-bicubic LR under ``root/lq``; ``clips``: name -> (num, h, w)."""
    from lrti_plugin.data.lmdb_tools import bicubic_downscale

    gt_root, lq_root = root / 'gt', root / 'lq'
    for k, (name, (num, h, w)) in enumerate(clips.items()):
        imgs = write_clip(gt_root, name, num, h, w, seed=100 * k)
        (lq_root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            cv2.imwrite(str(lq_root / name / f'{i:08d}.png'), bicubic_downscale(img, scale))
    return gt_root, lq_root


def corrupt(path: Path) -> None:
    path.write_bytes(b'this is not a PNG')
