"""The part the training datasets share: options, clip selection, storage checks, crop and augmentation.

:class:`PairedClipDataset` is the base of :class:`~lrti_plugin.data.recurrent_dataset.LRTIRecurrentDataset`
(short windows) and :class:`~lrti_plugin.data.long_clip_dataset.LRTILongClipDataset` (long clips with short
windows inside). It is not registered: it draws no items itself.
"""
import os
import random
from typing import List, Sequence, Tuple

import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import get_root_logger, img2tensor
from torch.utils import data

from .clip_io import ClipInfo, FrameReader, check_lmdb_keys, check_option_keys, read_meta_info, require_option

# Option keys every subclass accepts (documented in each subclass's docstring, which is its YAML reference).
COMMON_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'gt_size', 'random_reverse',
               'use_hflip', 'use_rot', 'filename_tmpl', 'filename_ext', 'exclude_clips', 'min_lq_size')


class PairedClipDataset(data.Dataset):
    """Paired LR/GT clips listed by a meta-info file, one random crop and augmentation per item.

    Subclasses parse their own options after ``super().__init__``, choose clips from :attr:`candidates`
    and hand them to :meth:`_use_clips`; items come from :meth:`_read_frames` and :meth:`_to_tensors`.

    Args:
        opt (dict): Dataset options, copied (never mutated); the common keys are listed in ``COMMON_KEYS``.
        own_keys (Sequence[str]): The subclass's own option keys.
        owner (str): Class name for error and log messages.

    Attributes:
        candidates (list[ClipInfo]): Meta-info clips minus ``exclude_clips``, before any length filter.
        clips (list[ClipInfo]): Clips in use, set by :meth:`_use_clips`.
    """

    def __init__(self, opt: dict, own_keys: Sequence[str], owner: str):
        super().__init__()
        opt = dict(opt)
        check_option_keys(opt, tuple(COMMON_KEYS) + tuple(own_keys), owner)
        self.opt, self.owner = opt, owner
        self.scale = int(require_option(opt, 'scale', owner))
        self.gt_size = int(require_option(opt, 'gt_size', owner))
        self.random_reverse = bool(opt.get('random_reverse', False))
        self.use_hflip, self.use_rot = bool(opt.get('use_hflip', False)), bool(opt.get('use_rot', False))
        if self.gt_size % self.scale:
            raise ValueError(f'{owner}: gt_size {self.gt_size} is not a multiple of scale {self.scale}')
        self.reader = FrameReader(
            opt.get('io_backend') or {'type': 'disk'},
            {'lq': require_option(opt, 'dataroot_lq', owner), 'gt': require_option(opt, 'dataroot_gt', owner)},
            filename_tmpl=opt.get('filename_tmpl', '08d'), filename_ext=opt.get('filename_ext', 'png'))
        self.candidates = self._exclude(read_meta_info(require_option(opt, 'meta_info_file', owner)))
        self.clips: List[ClipInfo] = []
        self._item_clip: List[int] = []

    def _exclude(self, clips: List[ClipInfo]) -> List[ClipInfo]:
        exclude = set(self.opt.get('exclude_clips') or [])
        unknown = exclude - {c.name for c in clips}
        if unknown:
            get_root_logger().warning(f'{self.owner}: exclude_clips not in the meta info: {sorted(unknown)}')
        return [c for c in clips if c.name not in exclude]

    def _use_clips(self, clips: List[ClipInfo]) -> None:
        """Check storage and sizes of ``clips`` and make one item per frame of each (longer clips more often)."""
        self.clips = list(clips)
        self._check_storage()
        self._check_sizes(int(self.opt.get('min_lq_size', 0)))
        self._item_clip = [i for i, clip in enumerate(self.clips) for _ in range(clip.num_frames)]

    def _check_sizes(self, min_lq_size: int) -> None:
        for clip in self.clips:
            # a meta file without shapes: the first GT frame tells
            h, w = clip.shape[:2] if clip.shape else self.reader.read('gt', clip.name, 0).shape[:2]
            if min(h, w) // self.scale < min_lq_size:
                raise ValueError(f'{self.owner}: clip {clip.name!r} has LR size {h // self.scale}x{w // self.scale}, '
                                 f'smaller than min_lq_size={min_lq_size}.')
            if min(h, w) < self.gt_size:
                raise ValueError(f'{self.owner}: clip {clip.name!r} ({h}x{w}) is smaller than gt_size={self.gt_size}.')

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
                        raise FileNotFoundError(f'{self.owner}: missing frame {path} (clip {clip.name!r} has '
                                                f'{clip.num_frames} frames per the meta info).')

    def _maybe_reversed(self, indices: List[int]) -> List[int]:
        """``indices`` reversed with probability 0.5 if ``random_reverse`` is on."""
        return indices[::-1] if self.random_reverse and random.random() < 0.5 else indices

    def _read_frames(self, clip: ClipInfo, lq_indices: Sequence[int],
                     gt_indices: Sequence[int]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """LR frames ``lq_indices`` and GT frames ``gt_indices`` of ``clip``, cropped at one random place.

        Indices are distinct (a repeated array would be flipped twice in place by ``augment``) and the GT ones are
        among the LR ones (each GT frame is checked against its LR frame).

        Each frame is cropped right after decoding (a copy, so the full frame is freed at once): the LR patch is
        ``gt_size // scale`` square, the GT patch ``gt_size`` square at ``scale`` times its position.

        Returns:
            LR patches in the order of ``lq_indices`` and GT patches in the order of ``gt_indices``, float32 BGR.

        Raises:
            ValueError: A GT frame that is not ``scale`` x its LR frame, LR frames of different sizes, a frame
                smaller than the patch, or an undecodable frame (all named).
            FileNotFoundError: A missing frame (named).
        """
        wanted = set(gt_indices)
        if len(wanted) != len(gt_indices) or len(set(lq_indices)) != len(lq_indices) or not wanted <= set(lq_indices):
            raise ValueError(f'{self.owner}: frame indices must be distinct, GT among LR; got LR {list(lq_indices)}, '
                             f'GT {list(gt_indices)}')
        lq_patch, box, lq_shape = self.gt_size // self.scale, None, None
        lqs, gts = [], {}
        for i in lq_indices:
            img_lq = self.reader.read('lq', clip.name, i)
            if i in wanted:
                img_gt = self.reader.read('gt', clip.name, i)
                if img_gt.shape[:2] != (img_lq.shape[0] * self.scale, img_lq.shape[1] * self.scale):
                    raise ValueError(f'{self.owner}: GT {self.reader.describe("gt", clip.name, i)} is '
                                     f'{img_gt.shape[:2]}, not x{self.scale} of LR '
                                     f'{self.reader.describe("lq", clip.name, i)} {img_lq.shape[:2]}.')
            if box is None:
                lq_shape = img_lq.shape[:2]
                if min(lq_shape) < lq_patch:
                    raise ValueError(f'{self.owner}: LR {self.reader.describe("lq", clip.name, i)} is {lq_shape}, '
                                     f'smaller than the patch {lq_patch} (gt_size / scale).')
                box = (random.randint(0, lq_shape[0] - lq_patch), random.randint(0, lq_shape[1] - lq_patch))
            elif img_lq.shape[:2] != lq_shape:
                raise ValueError(f'{self.owner}: LR {self.reader.describe("lq", clip.name, i)} is {img_lq.shape[:2]}, '
                                 f'other frames of clip {clip.name!r} are {lq_shape}.')
            top, left = box
            lqs.append(np.ascontiguousarray(img_lq[top:top + lq_patch, left:left + lq_patch]))
            if i in wanted:
                s = self.scale
                gts[i] = np.ascontiguousarray(img_gt[s * top:s * top + self.gt_size, s * left:s * left + self.gt_size])
        return lqs, [gts[i] for i in gt_indices]

    def _to_tensors(self, imgs: List[np.ndarray]) -> List[torch.Tensor]:
        """One random flip / rotation for all ``imgs`` (BasicSR ``augment``), as RGB (3, h, w) float32 tensors."""
        imgs = augment(imgs, self.use_hflip, self.use_rot)
        if not isinstance(imgs, list):  # augment unwraps single-element lists
            imgs = [imgs]
        return img2tensor(imgs, bgr2rgb=True, float32=True)

    def __len__(self) -> int:
        return len(self._item_clip)
