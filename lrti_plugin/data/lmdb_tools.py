"""Build BasicSR LMDBs (and the dataset meta-info file) from folders of clips.

The logic behind ``scripts/make_lmdb.py``; callable as :func:`make_lmdb` from tests and demos.

What is written (see :mod:`lrti_plugin.data.clip_io` for the conventions):

* ``<out>.lmdb``: frame ``i`` (0-based position in the naturally sorted file list) of clip ``c`` under key
  ``c/{i:08d}``, stored as PNG bytes (``cv2.imencode``, ``compress_level``), plus BasicSR's
  ``meta_info.txt`` (``<key>.png (h,w,c) <compress_level>``). For Vimeo-90K, ``im1.png``..``im7.png`` of
  ``00001/0001`` become ``00001/0001/00000000``..``00001/0001/00000006`` (our REDS-style keys, not BasicSR's
  ``Vimeo90KDataset`` keys ``00001/0001/im1``), so every layout is read by the same datasets.
* the dataset meta-info file: ``<clip> <num_frames> (h,w,c)`` per clip (GT shapes).
* optionally an LR LMDB with the same keys: either downscaled from the GT (``make_lr``) with BasicSR's
  MATLAB-style bicubic ``imresize``, or copied from an LQ folder after a GT/LQ consistency check.

Decision for ``make_lr``: a GT frame whose height or width is not a multiple of the scale is cropped to one
(bottom rows / right columns dropped, as BasicSR's ``mod_crop``) and the *cropped* GT is what the GT LMDB
and the meta-info file hold, so that GT size == scale x LR size exactly; cropped clips are logged.

Every output is built under a temporary name (``<out>.tmp-XXXX``) and renamed into place only after all
frames were written, so a failure never leaves a partial LMDB that looks valid.
"""
import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from basicsr.utils import get_root_logger
from basicsr.utils.matlab_functions import imresize
from tqdm import tqdm

from .clip_io import format_meta_line, lmdb_key, scan_clips

_NUMBERED = re.compile(r'^(.*?)(\d+)$')
# Heuristic size of the written PNG relative to the source file (PNG sources at another compression
# level stay within ~1.25x; JPEG sources decode to far larger lossless PNGs).
_SIZE_FACTOR = {'.png': 1.25}
_OTHER_SIZE_FACTOR = 6.0
_COMMIT_EVERY = 500


class MakeLmdbError(Exception):
    """Base of the errors :func:`make_lmdb` raises; ``culprit`` is the clip, file or path at fault."""

    def __init__(self, message: str, culprit: str):
        super().__init__(message)
        self.culprit = culprit


class FrameIndexError(MakeLmdbError):
    """Numbered frame names of a clip are duplicated (e.g. ``1.png`` and ``01.png``)."""


class MissingFrameError(FrameIndexError):
    """A clip with numbered frame names lacks an index between its first and last frame."""


class FrameSizeError(MakeLmdbError):
    """A frame's size differs from the first frame of its clip."""


class UnreadableImageError(MakeLmdbError):
    """A file with an image extension does not decode."""


class PairMismatchError(MakeLmdbError):
    """GT and LQ folders disagree: clip set, frame count, or GT size != scale x LQ size."""


class LmdbExistsError(MakeLmdbError):
    """An output exists and ``overwrite`` was not given."""


class DiskSpaceError(MakeLmdbError):
    """The estimated output size exceeds the free space."""


@dataclass
class MakeLmdbResult:
    """What :func:`make_lmdb` wrote (paths are ``None`` where nothing was written).

    Attributes:
        gt_lmdb: GT LMDB folder.
        lr_lmdb: LR LMDB folder (``make_lr`` or ``lq_root``).
        meta_info: Dataset meta-info file.
        clips: Clip name -> ``(num_frames, (h, w, c))`` of the GT as stored.
        cropped: Clips whose GT was cropped to a multiple of the scale.
        estimated_bytes: The size estimate used for the free-space check.
    """
    gt_lmdb: Optional[str]
    lr_lmdb: Optional[str]
    meta_info: Optional[str]
    clips: Dict[str, Tuple[int, Tuple[int, int, int]]] = field(default_factory=dict)
    cropped: List[str] = field(default_factory=list)
    estimated_bytes: int = 0


def check_frame_indices(clip: str, paths: List[Path]) -> None:
    """If all frame names of ``clip`` are ``<prefix><number>``, require consecutive numbers.

    Raises:
        MissingFrameError: Naming the clip, the first missing index and the files around it.
        FrameIndexError: On a duplicated index.
    """
    matches = [_NUMBERED.match(p.stem) for p in paths]
    if not all(matches) or len({m.group(1) for m in matches}) != 1:
        return  # names are not numbered: nothing to check
    indices = [int(m.group(2)) for m in matches]
    for prev, cur, prev_path, cur_path in zip(indices, indices[1:], paths, paths[1:]):
        if cur == prev:
            raise FrameIndexError(f'Clip {clip!r}: frames {prev_path.name} and {cur_path.name} have the same '
                                  f'index {cur}.', culprit=str(cur_path))
        if cur != prev + 1:
            missing = list(range(prev + 1, cur))
            raise MissingFrameError(f'Clip {clip!r}: frame index {prev + 1} is missing (between {prev_path.name} '
                                    f'and {cur_path.name}; missing here: {missing[:10]}).',
                                    culprit=f'{clip}/{prev + 1}')


def _check_clip_name(name: str) -> None:
    if not name.isascii() or any(ch.isspace() for ch in name):
        raise MakeLmdbError(f'Clip name {name!r} must be ASCII without spaces (LMDB keys and meta-info '
                            'lines depend on it); rename the folder.', culprit=name)


def _read(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise UnreadableImageError(f'Unreadable or corrupt image: {path}', culprit=str(path))
    return img


def _shape(img: np.ndarray) -> Tuple[int, int, int]:
    return (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic ``1/scale`` of an integer image (H, W[, C]) as the x4 BI degradation is made:
    BasicSR's ``imresize`` (antialiased cubic, a = -0.5) in float64, rounded half away from zero like MATLAB.
    Public: use it to make the LR of frames held in memory exactly as ``make_lmdb --make-lr`` does."""
    peak = float(np.iinfo(img.dtype).max)
    out = imresize(img.astype(np.float64) / peak, 1 / scale)
    return np.floor(np.clip(out * peak, 0, peak) + 0.5).astype(img.dtype)


def _estimate_bytes(clips: Dict[str, List[Path]]) -> int:
    return int(sum(os.path.getsize(p) * _SIZE_FACTOR.get(p.suffix.lower(), _OTHER_SIZE_FACTOR)
                   for paths in clips.values() for p in paths))


class _LmdbWriter:
    """Writes one LMDB (and its BasicSR ``meta_info.txt``) into a temporary folder beside ``out``."""

    def __init__(self, out: Path, map_size: int, compress_level: int):
        import lmdb

        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix=f'{out.name}.tmp-', dir=out.parent))
        self.env = lmdb.open(str(self.tmp), map_size=map_size)
        self.txn = self.env.begin(write=True)
        self.meta = open(self.tmp / 'meta_info.txt', 'w')
        self.params = [cv2.IMWRITE_PNG_COMPRESSION, compress_level]
        self.compress_level = compress_level
        self.count = 0

    def put(self, key: str, img: np.ndarray) -> None:
        ok, buf = cv2.imencode('.png', img, self.params)
        if not ok:
            raise MakeLmdbError(f'Could not encode {key} as PNG.', culprit=key)
        self.txn.put(key.encode('ascii'), buf.tobytes())
        h, w, c = _shape(img)
        self.meta.write(f'{key}.png ({h},{w},{c}) {self.compress_level}\n')
        self.count += 1
        if self.count % _COMMIT_EVERY == 0:
            self.txn.commit()
            self.txn = self.env.begin(write=True)

    def close(self) -> None:
        self.txn.commit()
        self.env.close()
        self.meta.close()

    def discard(self) -> None:
        for release in (self.txn.abort, self.env.close, self.meta.close):
            with contextlib.suppress(Exception):  # the original error matters, not a second one
                release()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def publish(self) -> None:
        """Rename the finished temporary folder to ``out``, replacing an old one only now."""
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f'{self.out.name}.old-', dir=self.out.parent))
            os.rename(self.out, old / self.out.name)
        os.rename(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _pair_clips(gt: Dict[str, List[Path]], lq: Dict[str, List[Path]]) -> None:
    for name in gt:
        if name not in lq:
            raise PairMismatchError(f'Clip {name!r} is in the GT folder but not in the LQ folder.', culprit=name)
        if len(gt[name]) != len(lq[name]):
            raise PairMismatchError(f'Clip {name!r}: {len(gt[name])} GT frames but {len(lq[name])} LQ frames.',
                                    culprit=name)
    extra = [name for name in lq if name not in gt]
    if extra:
        raise PairMismatchError(f'Clip {extra[0]!r} is in the LQ folder but not in the GT folder.', culprit=extra[0])


def _default_lr_out(out: Path, scale: int) -> Path:
    return out.with_name(f'{out.name[:-len(".lmdb")]}_LRx{scale}.lmdb')


def _check_args(out, lr_out, meta_info, make_lr, lq_root, scale, compress_level, check_only):
    if make_lr is not None and lq_root is not None:
        raise ValueError('make_lr and lq_root exclude each other: the LR LMDB comes from one of them.')
    if int(scale) < 1 or (make_lr is not None and int(make_lr) < 2):
        raise ValueError(f'scale / make_lr must be integers >= 1 / >= 2, got {scale} / {make_lr}')
    if not 0 <= compress_level <= 9:
        raise ValueError(f'compress_level must be in 0..9, got {compress_level}')
    if not check_only:
        for path in (out, lr_out):
            if path is not None and not str(path).endswith('.lmdb'):
                raise ValueError(f"LMDB path must end with '.lmdb', got {path}")
        if meta_info is not None and str(meta_info).endswith('.lmdb'):
            raise ValueError(f'meta_info must be a text file, got {meta_info}')


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f'{path.name}.tmp-', dir=path.parent)
    with os.fdopen(fd, 'w') as fout:
        fout.write(text)
    os.replace(tmp, path)


def make_lmdb(gt_root: str, out: Optional[str], *, layout: str = 'auto', lq_root: Optional[str] = None,
              scale: int = 4, make_lr: Optional[int] = None, lr_out: Optional[str] = None,
              meta_info: Optional[str] = None, compress_level: int = 1, overwrite: bool = False,
              check_only: bool = False, progress: bool = True) -> MakeLmdbResult:
    """Turn a folder of clips into a BasicSR LMDB plus the dataset meta-info file.

    Args:
        gt_root: Folder of GT clips (see :func:`lrti_plugin.data.clip_io.scan_clips` for ``layout``).
        out: GT LMDB folder to create, ending in ``.lmdb`` (ignored with ``check_only``).
        layout: ``auto`` | ``reds`` | ``vimeo``.
        lq_root: Folder of LQ clips with the same names: checked against the GT (same clips, same frame
            counts, GT size == ``scale`` x LQ size per frame) and written to ``lr_out``.
        scale: GT/LQ scale for the ``lq_root`` check.
        make_lr: If set, also write an LR LMDB downscaled from the GT by this factor (MATLAB bicubic).
        lr_out: LR LMDB folder; default ``<out stem>_LRx<scale>.lmdb`` beside ``out``.
        meta_info: Dataset meta-info file; default ``<out stem>_meta_info.txt`` beside ``out``.
        compress_level: PNG compression level 0..9 of the stored frames.
        overwrite: Replace existing outputs (only after the new ones are complete).
        check_only: Read and check everything, write nothing.
        progress: Show a tqdm progress bar.

    Returns:
        MakeLmdbResult describing what was written.

    Raises:
        MakeLmdbError: A subclass naming the culprit (see the classes of this module); nothing is left behind.
        FileNotFoundError: A data root is missing.
        ValueError: Bad arguments.
    """
    logger = get_root_logger()
    scale = int(make_lr if make_lr is not None else scale)
    has_lr = make_lr is not None or lq_root is not None
    out_path = Path(out) if out is not None else None
    if out_path is None and not check_only:
        raise ValueError('out (the GT LMDB path) is required unless check_only is set.')
    lr_path = None
    if has_lr and out_path is not None:
        lr_path = Path(lr_out) if lr_out is not None else _default_lr_out(out_path, scale)
    meta_path = None
    if out_path is not None:
        meta_path = Path(meta_info) if meta_info else out_path.with_name(f'{out_path.name[:-5]}_meta_info.txt')
    _check_args(out_path, lr_path, meta_path, make_lr, lq_root, scale, compress_level, check_only)

    gt_clips = scan_clips(gt_root, layout)
    lq_clips = scan_clips(lq_root, layout) if lq_root is not None else None
    for name, paths in gt_clips.items():
        _check_clip_name(name)
        check_frame_indices(name, paths)
    if lq_clips is not None:
        for name, paths in lq_clips.items():
            check_frame_indices(name, paths)
        _pair_clips(gt_clips, lq_clips)

    estimate = _estimate_bytes(gt_clips)
    estimate += _estimate_bytes(lq_clips) if lq_clips is not None else (estimate // scale**2 if has_lr else 0)
    result = MakeLmdbResult(None, None, None, estimated_bytes=estimate)
    if not check_only:
        _check_outputs(out_path, lr_path, meta_path, overwrite, estimate)

    writers = []
    try:
        if not check_only:
            map_size = max(10 * estimate, 1 << 28)
            writers.append(_LmdbWriter(out_path, map_size, compress_level))
            if has_lr:
                writers.append(_LmdbWriter(lr_path, map_size // scale + (1 << 28), compress_level))
        total = sum(len(v) for v in gt_clips.values())
        with tqdm(total=total, unit='frame', disable=not progress, desc='make_lmdb') as pbar:
            for name, paths in gt_clips.items():
                lq_paths = lq_clips[name] if lq_clips is not None else None
                shape, cropped = _write_clip(name, paths, lq_paths, writers, make_lr, scale, pbar)
                result.clips[name] = (len(paths), shape)
                if cropped:
                    result.cropped.append(name)
                    logger.warning(f'Clip {name}: GT cropped to {shape[0]}x{shape[1]} (a multiple of x{scale}).')
        for writer in writers:
            writer.close()
        for writer in writers:
            writer.publish()
    except BaseException:
        for writer in writers:
            if writer.tmp.exists():
                writer.discard()
        raise
    if check_only:
        logger.info(f'Checked {len(gt_clips)} clips under {gt_root}: no problems found.')
        return result
    _write_text_atomic(meta_path, ''.join(format_meta_line(n, num, s) for n, (num, s) in result.clips.items()))
    result.gt_lmdb, result.meta_info = str(out_path), str(meta_path)
    result.lr_lmdb = str(lr_path) if has_lr else None
    logger.info(f'Wrote {out_path} ({len(gt_clips)} clips, {total} frames), meta info {meta_path}'
                + (f', LR {lr_path}' if has_lr else ''))
    return result


def _check_outputs(out: Path, lr_out: Optional[Path], meta: Path, overwrite: bool, estimate: int) -> None:
    """Refuse existing outputs (unless ``overwrite``) and outputs that would not fit on the disk."""
    for path in (out, lr_out, meta):
        if path is not None and path.exists() and not overwrite:
            raise LmdbExistsError(f'{path} already exists; pass overwrite (--overwrite) to replace it.',
                                  culprit=str(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if estimate > free:
        raise DiskSpaceError(f'Not enough free space in {out.parent}: about {estimate / 2**20:.1f} MiB needed '
                             f'(estimated from the source image sizes), {free / 2**20:.1f} MiB free.',
                             culprit=str(out.parent))


def _write_clip(name, paths, lq_paths, writers, make_lr, scale, pbar):
    """Check and write one clip; returns its stored GT ``(h, w, c)`` and whether it was cropped."""
    first = first_lq = None
    cropped = False
    for index, path in enumerate(paths):
        img = _read(path)
        if first is None:
            first = _shape(img)
        elif _shape(img) != first:
            raise FrameSizeError(f'Clip {name!r}: {path.name} is {_shape(img)} but the first frame is {first} '
                                 f'({path}).', culprit=str(path))
        lr = None
        if make_lr is not None:
            h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
            cropped = cropped or (h, w) != img.shape[:2]
            img = img[:h, :w, ...]
            lr = bicubic_downscale(img, scale)
        elif lq_paths is not None:
            lr = _read(lq_paths[index])
            lq_shape = _shape(lr)
            first_lq = first_lq or lq_shape
            if lq_shape != first_lq:
                raise FrameSizeError(f'Clip {name!r}: LQ {lq_paths[index].name} is {lq_shape} but the first LQ '
                                     f'frame is {first_lq} ({lq_paths[index]}).', culprit=str(lq_paths[index]))
            expected = (lq_shape[0] * scale, lq_shape[1] * scale, lq_shape[2])
            if _shape(img) != expected:
                raise PairMismatchError(f'Clip {name!r} frame {index} ({path.name}): GT {_shape(img)} is not '
                                        f'x{scale} of LQ {lq_shape} ({lq_paths[index]}).', culprit=str(path))
        if writers:
            writers[0].put(lmdb_key(name, index), img)
            if lr is not None:
                writers[1].put(lmdb_key(name, index), lr)
        pbar.update(1)
    return _shape(img), cropped
