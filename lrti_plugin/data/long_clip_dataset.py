"""Long clips with short windows inside, for LRTI training (method.md section 2)."""
import random
from typing import List

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY

from lrti_plugin.utils.validate import expect_choice, expect_int

from .clip_io import BASICSR_DATASET_KEYS, ClipInfo, require_option
from .paired_clips import COMMON_KEYS, PairedClipDataset

_OWNER = 'LRTILongClipDataset'
_KEYS = ('long_frames', 'clip_frames', 'num_clips', 'short_clips', 'window_sampling')


@DATASET_REGISTRY.register()
class LRTILongClipDataset(PairedClipDataset):
    """A long LR clip of ``L`` consecutive frames and the GT of ``N`` windows of ``T`` frames inside it.

    The model runs the long clip without gradient to cache the boundary states, then trains on the
    windows (see :class:`lrti_plugin.state.BoundaryStates`). Clip names and lengths come from the meta-info
    file. One item per frame of every used clip (longer clips are drawn more often); the item picks its
    clip, a uniformly random long-clip start, one crop and one augmentation (flip, rotation, reversal) for
    the whole long clip, and the window starts. Only the GT frames some window covers are read.

    Positions are indices into the returned ``lq`` (after a reversal, position 0 is the long clip's last
    frame): window ``n`` covers positions ``starts[n] .. starts[n] + T - 1``, and ``gt[n, t]`` is
    the GT of position ``starts[n] + t``, so the window's LR is ``lq[starts[n]:starts[n] + T]``.

    Args:
        opt (dict): Dataset options (never mutated):

            dataroot_gt (str): GT root: folder ``<clip>/<frame>.<ext>`` or an ``.lmdb`` folder.
            dataroot_lq (str): LR root, same layout and clip names.
            meta_info_file (str): ``<clip> <num_frames> (h,w,c)`` per line (GT shape).
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}`` (LMDB keys ``<clip>/<index 08d>``).
            long_frames (int): ``L``, frames of the long clip.
            clip_frames (int): ``T``, frames of each window (at most ``long_frames``).
            num_clips (int): ``N`` >= 1, windows per long clip.
            window_sampling (str): ``random``: ``N`` independent uniform starts in ``[0, L - T]`` (windows may
                overlap or repeat). ``even``: ``round(n * (L - T) / (N - 1))`` for ``n = 0 .. N-1`` (halves
                rounded up), from the first to the last possible start; ``N = 1`` takes the middle start
                ``(L - T) // 2``, which has context on both sides. Default: ``random``.
            short_clips (str): Clips shorter than ``L``. ``skip``: not used (their count is logged); a
                ``long_frames`` longer than every clip raises at construction. ``whole``: the long clip is the
                whole clip, so ``L`` (the ``lq`` length and the windows' range) varies between items; as
                BasicSR's default collate needs equal lengths, ``batch_size_per_gpu`` > 1 then raises at
                construction when some clip is shorter than ``L`` (padding would feed invented frames to
                the recurrence). Clips shorter than ``T`` hold no window and are always skipped (logged).
                Default: ``skip``.
            gt_size (int): GT patch size (a multiple of ``scale``); the LR patch is ``gt_size // scale``.
            scale (int): Upscaling factor (BasicSR copies it from the top-level options).
            random_reverse (bool): Reverse the long clip with probability 0.5 (windows are placed in the
                reversed clip). Default: False.
            use_hflip (bool): Random horizontal flip. Default: False.
            use_rot (bool): Random vertical flip / transpose. Default: False.
            filename_tmpl (str): Format spec of the frame index in disk names. Default: ``'08d'``.
            filename_ext (str): Disk file extension. Default: ``'png'``.
            exclude_clips (list[str]): Clip names not to use (e.g. REDS4 validation clips). Default: none.
            min_lq_size (int): Raise if a clip's LR height or width (meta shape // scale) is smaller.
                Default: 0 (no check).

    Returns (per item): ``lq`` (L, 3, h, w) float32 RGB in [0, 1], the long LR clip; ``gt``
    (N, T, 3, s*h, s*w), the GT of the windows only; ``starts`` (N,) int64, the window starts (positions in
    ``lq``); ``key`` ``<clip>/<first frame 08d>`` (the lowest frame index of the long clip, also when reversed).

    Raises:
        ValueError: Bad or unknown options (naming the key), no usable clip, ``whole`` with unequal lengths and
            ``batch_size_per_gpu`` > 1, clips too small for ``gt_size``/``min_lq_size``, and at load time an
            LR/GT size mismatch or an undecodable frame (naming the key or file).
        FileNotFoundError: Missing meta-info file, clip folder or frame (naming it).
        KeyError: An LMDB lacks a key the meta info implies (naming the key and LMDB).
    """

    OPTION_KEYS = frozenset(COMMON_KEYS + _KEYS) | BASICSR_DATASET_KEYS  # every key it reads (for option_check)

    def __init__(self, opt: dict):
        super().__init__(opt, _KEYS, _OWNER)
        self.long_frames = self._positive('long_frames')
        self.clip_frames = self._positive('clip_frames')
        self.num_clips = self._positive('num_clips')
        if self.clip_frames > self.long_frames:
            raise ValueError(f'{_OWNER}: clip_frames ({self.clip_frames}) must not exceed long_frames '
                             f'({self.long_frames}).')
        self.window_sampling = self._choice('window_sampling', ('random', 'even'))
        self.short_clips = self._choice('short_clips', ('skip', 'whole'))
        self._use_clips(self._usable(self.candidates))
        get_root_logger().info(
            f'{_OWNER}: {len(self.clips)} clips, {len(self)} frames; long clips of {self.long_frames} frames '
            f'with {self.num_clips} x {self.clip_frames}-frame windows ({self.window_sampling}), short clips: '
            f'{self.short_clips}, random reverse {self.random_reverse}.')

    def _positive(self, key: str) -> int:
        return expect_int(f'{_OWNER}.{key}', require_option(self.opt, key, _OWNER), minimum=1)

    def _choice(self, key: str, choices: tuple) -> str:
        return expect_choice(f'{_OWNER}.{key}', self.opt.get(key, choices[0]), choices)

    def _usable(self, clips: List[ClipInfo]) -> List[ClipInfo]:
        """``clips`` that give a long clip under ``short_clips`` (skipped ones counted in the log)."""
        if not clips:
            raise ValueError(f'{_OWNER}: no clip in the meta info (after exclude_clips).')
        longest = max(c.num_frames for c in clips)
        need = self.long_frames if self.short_clips == 'skip' else self.clip_frames
        kept = [c for c in clips if c.num_frames >= need]
        if not kept:
            key = 'long_frames' if self.short_clips == 'skip' else 'clip_frames'
            hint = '; use short_clips: whole or a smaller long_frames' if key == 'long_frames' else ''
            raise ValueError(f'{_OWNER}: {key}={need} is longer than every clip (longest: {longest} frames, '
                             f'short_clips: {self.short_clips}){hint}.')
        if len(kept) < len(clips):
            get_root_logger().info(f'{_OWNER}: skipped {len(clips) - len(kept)} clips shorter than {need} frames '
                                   f'(short_clips: {self.short_clips}).')
        shorter = [c.name for c in kept if c.num_frames < self.long_frames]
        if shorter:
            batch = int(self.opt.get('batch_size_per_gpu') or 1)
            if batch > 1:
                raise ValueError(f'{_OWNER}: short_clips: whole gives long clips of unequal lengths ({len(shorter)} '
                                 f'clips shorter than long_frames={self.long_frames}, e.g. {shorter[:3]}), which '
                                 f'cannot be batched with batch_size_per_gpu={batch}; use batch_size_per_gpu: 1 or '
                                 'short_clips: skip.')
            get_root_logger().info(f'{_OWNER}: {len(shorter)} clips shorter than {self.long_frames} frames give '
                                   'their whole length.')
        return kept

    def _window_starts(self, length: int) -> List[int]:
        """Starts of the ``N`` windows in a long clip of ``length`` frames (see ``window_sampling``)."""
        last = length - self.clip_frames
        if self.window_sampling == 'random':
            return [random.randint(0, last) for _ in range(self.num_clips)]
        if self.num_clips == 1:
            return [last // 2]
        den = self.num_clips - 1
        return [(2 * n * last + den) // (2 * den) for n in range(self.num_clips)]  # round(n*last/den), halves up

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[self._item_clip[index]]
        length = min(self.long_frames, clip.num_frames)
        first = random.randint(0, clip.num_frames - length)
        frames = self._maybe_reversed(list(range(first, first + length)))  # frame index at each position
        starts = self._window_starts(length)
        positions = sorted({s + t for s in starts for t in range(self.clip_frames)})  # GT to read, each once
        img_lqs, img_gts = self._read_frames(clip, frames, [frames[p] for p in positions])
        tensors = self._to_tensors(img_lqs + img_gts)
        gt_at = dict(zip(positions, tensors[length:]))
        return {
            'lq': torch.stack(tensors[:length], dim=0),  # (L, 3, h, w)
            'gt': torch.stack([torch.stack([gt_at[s + t] for t in range(self.clip_frames)], dim=0)
                               for s in starts], dim=0),  # (N, T, 3, sH, sW)
            'starts': torch.tensor(starts, dtype=torch.int64),  # (N,)
            'key': f'{clip.name}/{first:08d}',
        }
