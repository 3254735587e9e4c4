"""Build the real-video training and validation LMDBs of the reproduction campaigns (docs/results.md).

    python scripts/prepare_real_data.py --shared ../shared/data --out datasets/real

Sources (the team's ``shared/data``; its README gives their provenance and licences; Vid4 is never read):

* ``train_real/temple`` (31 lossless frames, 512x384): training;
* ``videos/opencv-doc/box.mp4`` (455 frames) and ``cup.mp4`` (217 frames), hand-held H.264 at 640x480:
  training, downscaled x2 with area averaging (antialiased) to 320x240 before use as GT, so that codec
  artefacts are not learned as detail;
* ``train_real/baseball`` (20 lossless frames, 512x288, fast motion, a scene of its own): validation,
  used to pick settings and draw the validation curves; never trained on.

Writes ``train_GT.lmdb``/``val_GT.lmdb`` with their x4 MATLAB-bicubic LR LMDBs (``*_LRx4.lmdb``) and
meta-info files through ``make_lmdb``. Existing LMDBs are kept (reused), never overwritten.
"""
import argparse
import os
import sys

import cv2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import lrti_plugin  # noqa: E402,F401  (shim before basicsr)
from lrti_plugin.data.lmdb_tools import make_lmdb  # noqa: E402

TRAIN_FRAMES = ('temple',)
TRAIN_VIDEOS = ('box', 'cup')
VAL_FRAMES = ('baseball',)


def decode_video(path: str, downscale: int) -> list:
    """Every frame of a video as BGR uint8, area-downscaled by ``downscale``; ValueError if none decodes."""
    cap = cv2.VideoCapture(path)
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            h, w = frame.shape[:2]
            frames.append(cv2.resize(frame, (w // downscale, h // downscale), interpolation=cv2.INTER_AREA))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f'{path}: no frame could be decoded')
    return frames


def write_frames(folder: str, frames: list) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        path = os.path.join(folder, f'{i:08d}.png')
        if not cv2.imwrite(path, frame):
            raise OSError(f'could not write {path}')


def link_frames(src: str, dst: str) -> None:
    """Copy a lossless frame folder (symlinks would tie the PNG tree to ``src``'s location)."""
    names = sorted(n for n in os.listdir(src) if n.endswith('.png'))
    if not names:
        raise ValueError(f'{src}: no PNG frames')
    write_frames(dst, [cv2.imread(os.path.join(src, n), cv2.IMREAD_UNCHANGED) for n in names])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--shared', default=os.path.join(REPO, '..', 'shared', 'data'), help='shared/data folder')
    parser.add_argument('--out', default='datasets/real', help='output folder (default: datasets/real)')
    args = parser.parse_args(argv)
    for sub in ('train_real', os.path.join('videos', 'opencv-doc')):
        if not os.path.isdir(os.path.join(args.shared, sub)):
            print(f'prepare_real_data: error: {os.path.join(args.shared, sub)} not found (--shared)', file=sys.stderr)
            return 1
    splits = {'train': [('frames', n) for n in TRAIN_FRAMES] + [('video', n) for n in TRAIN_VIDEOS],
              'val': [('frames', n) for n in VAL_FRAMES]}
    for split, sources in splits.items():
        lmdb_path = os.path.join(args.out, f'{split}_GT.lmdb')
        if os.path.isdir(lmdb_path):
            print(f'[prepare] {lmdb_path} exists, kept')
            continue
        png_root = os.path.join(args.out, f'{split}_png')
        for kind, name in sources:
            folder = os.path.join(png_root, name)
            if os.path.isdir(folder):
                continue
            if kind == 'video':
                write_frames(folder, decode_video(os.path.join(args.shared, 'videos', 'opencv-doc', f'{name}.mp4'), 2))
            else:
                link_frames(os.path.join(args.shared, 'train_real', name, 'GT'), folder)
            print(f'[prepare] {split}: {name} -> {folder}')
        result = make_lmdb(png_root, lmdb_path, layout='reds', make_lr=4, progress=sys.stderr.isatty())
        print(f'[prepare] wrote {result}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
