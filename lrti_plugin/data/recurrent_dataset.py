"""Training clips of consecutive frames from clips of any name and length (lengths from the meta-info file)."""
import os
import random
from typing import List

import torch
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .clip_io import ClipInfo, FrameReader, check_lmdb_keys, check_option_keys, read_meta_info, require_option

_OWNER = 'LRTIRecurrentDataset'
_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'num_frame', 'gt_size', 'interval_list',
         'random_reverse', 'use_hflip', 'use_rot', 'filename_tmpl', 'filename_ext', 'skip_short_clips',
         'exclude_clips', 'min_lq_size')


@DATASET_REGISTRY.register()
class LRTIRecurrentDataset(data.Dataset):
    """Random windows of ``num_frame`` frames (LR and GT) for recurrent VSR training.

    Clip names and lengths come from the meta-info file, so any clip set works (REDS, Vimeo-90K, own
    footage made with ``scripts/make_lmdb.py``). One item per frame of every used clip (longer clips are
    drawn more often); the item picks its clip, and the window start is drawn uniformly at random.

    Args:
        opt (dict): Dataset options (never mutated):

            dataroot_gt (str): GT root: folder ``<clip>/<frame>.<ext>`` or an ``.lmdb`` folder.
            dataroot_lq (str): LR root, same layout and clip names.
            meta_info_file (str): ``<clip> <num_frames> (h,w,c)`` per line (GT shape).
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}`` (LMDB keys ``<clip>/<index 08d>``).
            num_frame (int): Frames ``T`` per item.
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

    def __init__(self, opt: dict):
        super().__init__()
        opt = dict(opt)
        check_option_keys(opt, _KEYS, _OWNER)
        self.opt = opt
        self.scale = int(require_option(opt, 'scale', _OWNER))
        self.num_frame = int(require_option(opt, 'num_frame', _OWNER))
        self.gt_size = int(require_option(opt, 'gt_size', _OWNER))
        self.interval_list = [int(v) for v in opt.get('interval_list') or [1]]
        self.random_reverse = bool(opt.get('random_reverse', False))
        self.use_hflip, self.use_rot = bool(opt.get('use_hflip', False)), bool(opt.get('use_rot', False))
        if self.num_frame < 1 or min(self.interval_list) < 1:
            raise ValueError(f'{_OWNER}: num_frame and interval_list must be >= 1, got {self.num_frame} and '
                             f'{self.interval_list}')
        if self.gt_size % self.scale:
            raise ValueError(f'{_OWNER}: gt_size {self.gt_size} is not a multiple of scale {self.scale}')

        clips = read_meta_info(require_option(opt, 'meta_info_file', _OWNER))
        self.clips = self._select_clips(clips)
        self.reader = FrameReader(
            opt.get('io_backend') or {'type': 'disk'},
            {'lq': require_option(opt, 'dataroot_lq', _OWNER), 'gt': require_option(opt, 'dataroot_gt', _OWNER)},
            filename_tmpl=opt.get('filename_tmpl', '08d'), filename_ext=opt.get('filename_ext', 'png'))
        self._check_storage()
        self._check_sizes(int(opt.get('min_lq_size', 0)))
        self._item_clip = [i for i, clip in enumerate(self.clips) for _ in range(clip.num_frames)]
        get_root_logger().info(
            f'{_OWNER}: {len(self.clips)} clips, {len(self._item_clip)} frames, num_frame {self.num_frame}, '
            f'intervals {self.interval_list}, random reverse {self.random_reverse}.')

    def _span(self, interval: int) -> int:
        return (self.num_frame - 1) * interval + 1

    def _select_clips(self, clips: List[ClipInfo]) -> List[ClipInfo]:
        logger = get_root_logger()
        exclude = set(self.opt.get('exclude_clips') or [])
        unknown = exclude - {c.name for c in clips}
        if unknown:
            logger.warning(f'{_OWNER}: exclude_clips not in the meta info: {sorted(unknown)}')
        clips = [c for c in clips if c.name not in exclude]
        need = self._span(min(self.interval_list))
        short = [c.name for c in clips if c.num_frames < need]
        if short and not self.opt.get('skip_short_clips', False):
            raise ValueError(f'{_OWNER}: clips shorter than num_frame={self.num_frame} (span {need}): {short}; '
                             'set skip_short_clips: true to skip them.')
        if short:
            logger.info(f'{_OWNER}: skipped {len(short)} clips shorter than {need} frames.')
        clips = [c for c in clips if c.num_frames >= need]
        if not clips:
            raise ValueError(f'{_OWNER}: no clip left with at least {need} frames.')
        return clips

    def _check_sizes(self, min_lq_size: int) -> None:
        for clip in self.clips:
            # a meta file without shapes: the first GT frame tells
            h, w = clip.shape[:2] if clip.shape else self.reader.read('gt', clip.name, 0).shape[:2]
            if min(h, w) // self.scale < min_lq_size:
                raise ValueError(f'{_OWNER}: clip {clip.name!r} has LR size {h // self.scale}x{w // self.scale}, '
                                 f'smaller than min_lq_size={min_lq_size}.')
            if min(h, w) < self.gt_size:
                raise ValueError(f'{_OWNER}: clip {clip.name!r} ({h}x{w}) is smaller than gt_size={self.gt_size}.')

    def _check_storage(self) -> None:
        """LMDB: every implied key exists; disk: each clip's first and last frame exist."""
        if self.reader.is_lmdb:
            for client in ('lq', 'gt'):
                check_lmdb_keys(self.reader.roots[client], self.clips)
            return
        for clip in self.clips:
            for client in ('lq', 'gt'):
                for index in (0, clip.num_frames - 1):
                    path = self.reader.locate(client, clip.name, index)
                    if not os.path.isfile(path):
                        raise FileNotFoundError(f'{_OWNER}: missing frame {path} (clip {clip.name!r} has '
                                                f'{clip.num_frames} frames per the meta info).')

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[self._item_clip[index]]
        interval = random.choice([v for v in self.interval_list if self._span(v) <= clip.num_frames])
        start = random.randint(0, clip.num_frames - self._span(interval))
        indices = list(range(start, start + self._span(interval), interval))
        if self.random_reverse and random.random() < 0.5:
            indices.reverse()

        img_lqs, img_gts = [], []
        for i in indices:
            img_lq, img_gt = self.reader.read('lq', clip.name, i), self.reader.read('gt', clip.name, i)
            if img_gt.shape[:2] != (img_lq.shape[0] * self.scale, img_lq.shape[1] * self.scale):
                raise ValueError(f'{_OWNER}: GT {self.reader.describe("gt", clip.name, i)} is '
                                 f'{img_gt.shape[:2]}, not x{self.scale} of LR '
                                 f'{self.reader.describe("lq", clip.name, i)} {img_lq.shape[:2]}.')
            img_lqs.append(img_lq)
            img_gts.append(img_gt)
        gt_path = self.reader.describe('gt', clip.name, indices[0])
        img_gts, img_lqs = paired_random_crop(img_gts, img_lqs, self.gt_size, self.scale, gt_path)
        if self.num_frame == 1:  # paired_random_crop unwraps single-element lists
            img_gts, img_lqs = [img_gts], [img_lqs]
        imgs = augment(img_lqs + img_gts, self.use_hflip, self.use_rot)
        if not isinstance(imgs, list):
            imgs = [imgs]
        tensors = img2tensor(imgs, bgr2rgb=True, float32=True)
        return {
            'lq': torch.stack(tensors[:self.num_frame], dim=0),  # (T, 3, h, w)
            'gt': torch.stack(tensors[self.num_frame:], dim=0),  # (T, 3, sH, sW)
            'key': f'{clip.name}/{start:08d}',
        }

    def __len__(self) -> int:
        return len(self._item_clip)
