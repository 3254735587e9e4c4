"""Training clips of consecutive frames from clips of any name and length (lengths from the meta-info file)."""
import random
import warnings
from typing import List

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY

from lrti_plugin.utils.validate import expect_int

from .clip_io import BASICSR_DATASET_KEYS, ClipInfo, require_option
from .paired_clips import COMMON_KEYS, PairedClipDataset

_OWNER = 'LRTIRecurrentDataset'
_KEYS = ('clip_frames', 'num_frame', 'interval_list', 'skip_short_clips')  # num_frame: the old name of clip_frames


def clip_frames_option(opt: dict, owner: str) -> int:
    """``clip_frames`` (T), or its old name ``num_frame`` with a deprecation warning; a positive int."""
    if 'num_frame' in opt and 'clip_frames' in opt:
        raise ValueError(f'{owner}: give clip_frames only (num_frame is its old name), not both')
    if 'num_frame' in opt:
        warnings.warn(f'{owner}: option num_frame is deprecated, use clip_frames (the same T)', DeprecationWarning,
                      stacklevel=3)
        get_root_logger().warning(f'{owner}: option num_frame is deprecated; use clip_frames (the same T).')
        return expect_int(f'{owner}.num_frame', require_option(opt, 'num_frame', owner), minimum=1)
    return expect_int(f'{owner}.clip_frames', require_option(opt, 'clip_frames', owner), minimum=1)


@DATASET_REGISTRY.register()
class LRTIRecurrentDataset(PairedClipDataset):
    """Random windows of ``clip_frames`` frames (LR and GT) for recurrent VSR training.

    Clip names and lengths come from the meta-info file, so any clip set works (REDS, Vimeo-90K, own
    footage made with ``scripts/make_lmdb.py``). One item per frame of every used clip (longer clips are
    drawn more often); the item picks its clip, and the window start is drawn uniformly at random.

    Args:
        opt (dict): Dataset options (never mutated):

            dataroot_gt (str): GT root: folder ``<clip>/<frame>.<ext>`` or an ``.lmdb`` folder.
            dataroot_lq (str): LR root, same layout and clip names.
            meta_info_file (str): ``<clip> <num_frames> (h,w,c)`` per line (GT shape).
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}`` (LMDB keys ``<clip>/<index 08d>``).
            clip_frames (int): Frames ``T`` per item (the name ``LRTILongClipDataset`` uses for its windows).
                ``num_frame`` (BasicSR's name) still works, with a deprecation warning.
            gt_size (int): GT patch size (a multiple of ``scale``); the LR patch is ``gt_size // scale``.
            scale (int): Upscaling factor (BasicSR copies it from the top-level options).
            interval_list (list[int]): Temporal strides to draw from. Default: ``[1]``.
            random_reverse (bool): Reverse the window with probability 0.5. Default: False.
            use_hflip (bool): Random horizontal flip. Default: False.
            use_rot (bool): Random vertical flip / transpose. Default: False.
            filename_tmpl (str): Format spec of the frame index in disk names. Default: ``'08d'``.
            filename_ext (str): Disk file extension. Default: ``'png'``.
            skip_short_clips (bool): Skip clips shorter than one window (logged) instead of raising.
                Default: False.
            exclude_clips (list[str]): Clip names not to use (e.g. REDS4 validation clips). Default: none.
            min_lq_size (int): Raise if a clip's LR height or width (meta shape // scale) is smaller.
                Default: 0 (no check).

    Returns (per item): ``lq`` (T, 3, h, w) and ``gt`` (T, 3, s*h, s*w) float32 RGB in [0, 1], and ``key``
    ``<clip>/<start frame 08d>`` (the lowest frame index of the window, also when reversed).

    Raises:
        ValueError: Bad or unknown options, short clips, clips too small for ``gt_size``/``min_lq_size``,
            and at load time an LR/GT size mismatch or an undecodable frame (naming the key or file).
        FileNotFoundError: Missing meta-info file, clip folder or frame (naming it).
        KeyError: An LMDB lacks a key the meta info implies (naming the key and LMDB).
    """

    OPTION_KEYS = frozenset(COMMON_KEYS + _KEYS) | BASICSR_DATASET_KEYS  # every key it reads (for option_check)

    def __init__(self, opt: dict):
        super().__init__(opt, _KEYS, _OWNER)
        self.num_frame = clip_frames_option(self.opt, _OWNER)
        self.interval_list = [int(v) for v in self.opt.get('interval_list') or [1]]
        if min(self.interval_list) < 1:
            raise ValueError(f'{_OWNER}: interval_list must be >= 1, got {self.interval_list}')
        self._use_clips(self._long_enough(self.candidates))
        get_root_logger().info(
            f'{_OWNER}: {len(self.clips)} clips, {len(self)} frames, clip_frames {self.num_frame}, '
            f'intervals {self.interval_list}, random reverse {self.random_reverse}.')

    def _span(self, interval: int) -> int:
        return (self.num_frame - 1) * interval + 1

    def _long_enough(self, clips: List[ClipInfo]) -> List[ClipInfo]:
        need = self._span(min(self.interval_list))
        short = [c.name for c in clips if c.num_frames < need]
        if short and not self.opt.get('skip_short_clips', False):
            raise ValueError(f'{_OWNER}: clips shorter than clip_frames={self.num_frame} (span {need}): {short}; '
                             'set skip_short_clips: true to skip them.')
        if short:
            get_root_logger().info(f'{_OWNER}: skipped {len(short)} clips shorter than {need} frames.')
        clips = [c for c in clips if c.num_frames >= need]
        if not clips:
            raise ValueError(f'{_OWNER}: no clip left with at least {need} frames.')
        return clips

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[self._item_clip[index]]
        interval = random.choice([v for v in self.interval_list if self._span(v) <= clip.num_frames])
        start = random.randint(0, clip.num_frames - self._span(interval))
        indices = self._maybe_reversed(list(range(start, start + self._span(interval), interval)))
        img_lqs, img_gts = self._read_frames(clip, indices, indices)
        tensors = self._to_tensors(img_lqs + img_gts)
        return {
            'lq': torch.stack(tensors[:self.num_frame], dim=0),  # (T, 3, h, w)
            'gt': torch.stack(tensors[self.num_frame:], dim=0),  # (T, 3, sH, sW)
            'key': f'{clip.name}/{start:08d}',
        }
