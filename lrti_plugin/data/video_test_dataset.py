"""Whole clips of any name and length for validation, test and inference."""
from typing import Dict, List, Optional

import torch
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from .clip_io import (
    BASICSR_DATASET_KEYS,
    ClipInfo,
    FrameReader,
    check_lmdb_keys,
    check_option_keys,
    read_meta_info,
    require_option,
    scan_clips,
)

_OWNER = 'LRTIVideoTestDataset'
_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'cache_data', 'num_frame', 'clips',
         'filename_tmpl', 'filename_ext')


@DATASET_REGISTRY.register()
class LRTIVideoTestDataset(data.Dataset):
    """One item per clip: all its frames (or the first ``num_frame``), for recurrent models.

    Sets ``self.data_info = {'folder': [clip name per frame]}``, which BasicSR's
    ``VideoRecurrentModel.dist_validation`` uses to count frames per clip.

    Args:
        opt (dict): Dataset options (never mutated):

            dataroot_lq (str): LR root: folder ``<clip>/<frame>.<ext>`` or an ``.lmdb`` folder.
            dataroot_gt (str | None): GT root, same clip names; ``None`` for pure inference (no ``gt`` key).
            meta_info_file (str | None): ``<clip> <num_frames> [(h,w,c)]`` per line. Required for LMDB. On disk
                without it, every folder under ``dataroot_lq`` that holds images is a clip (name: its relative
                path) and its files are read in natural order; the GT folder must hold the same clips and counts.
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}`` (LMDB keys ``<clip>/<index 08d>``).
            cache_data (bool): Decode every clip once at construction. Default: False.
            num_frame (int): ``-1`` for whole clips, else the first ``num_frame`` frames (fewer if the clip is
                shorter). Default: -1.
            clips (list[str] | None): Use only these clips, in this order. Default: all.
            scale (int): Upscaling factor, for the GT/LR size check (BasicSR copies it from the top level).
            filename_tmpl (str): Format spec of the frame index in disk names when a meta file is given.
                Default: ``'08d'``.
            filename_ext (str): Disk file extension when a meta file is given. Default: ``'png'``.

    Returns (per item): ``lq`` (T, 3, H, W) float32 RGB [0, 1]; ``gt`` (T, 3, sH, sW) if ``dataroot_gt`` is set;
    ``folder`` (clip name); ``lq_path`` (path or LMDB key of the first LR frame); ``idx`` (int, clip index).

    Raises:
        ValueError: Bad or unknown options, unknown names in ``clips``, GT/LR clip or count mismatch when
            scanning, and at load time GT size != scale x LR size or an undecodable frame (named).
        FileNotFoundError: Missing root, meta file or frame (named).
        KeyError: An LMDB lacks a key the meta info implies (naming the key and LMDB).
    """

    OPTION_KEYS = frozenset(_KEYS) | BASICSR_DATASET_KEYS  # every key it reads (the option checker's list)

    def __init__(self, opt: dict):
        super().__init__()
        opt = dict(opt)
        check_option_keys(opt, _KEYS, _OWNER)
        self.opt = opt
        self.has_gt = opt.get('dataroot_gt') is not None
        self.scale = int(require_option(opt, 'scale', _OWNER)) if self.has_gt else opt.get('scale')
        num_frame = int(opt.get('num_frame', -1))
        if num_frame == 0 or num_frame < -1:
            raise ValueError(f'{_OWNER}: num_frame must be -1 (whole clip) or >= 1, got {num_frame}')

        roots = {'lq': require_option(opt, 'dataroot_lq', _OWNER)}
        if self.has_gt:
            roots['gt'] = opt['dataroot_gt']
        self.reader = FrameReader(opt.get('io_backend') or {'type': 'disk'}, roots,
                                  filename_tmpl=opt.get('filename_tmpl', '08d'),
                                  filename_ext=opt.get('filename_ext', 'png'))
        if opt.get('meta_info_file'):
            clips = read_meta_info(opt['meta_info_file'])
        elif self.reader.is_lmdb:
            raise ValueError(f'{_OWNER}: option meta_info_file is required with the lmdb io_backend.')
        else:
            clips = self._scan()
        clips = self._subset(clips, opt.get('clips'))
        if num_frame > 0:
            clips = [ClipInfo(c.name, min(c.num_frames, num_frame), c.shape) for c in clips]
        self.clips = clips
        if self.reader.is_lmdb:
            for root in roots.values():
                check_lmdb_keys(root, self.clips)

        self.data_info = {'folder': [c.name for c in self.clips for _ in range(c.num_frames)]}
        self.cache: Dict[str, dict] = {}
        if opt.get('cache_data', False):
            for i, clip in enumerate(self.clips):
                self.cache[clip.name] = self._load(i)
        get_root_logger().info(f'{_OWNER}: {len(self.clips)} clips, {len(self.data_info["folder"])} frames'
                               f'{" (cached)" if self.cache else ""}.')

    def _scan(self) -> List[ClipInfo]:
        """Clips found on disk under the LR root (and matched in the GT root)."""
        lq = {k: [str(p) for p in v] for k, v in scan_clips(self.reader.roots['lq']).items()}
        self.reader.scanned['lq'] = lq
        if self.has_gt:
            gt = {k: [str(p) for p in v] for k, v in scan_clips(self.reader.roots['gt']).items()}
            for name, frames in lq.items():
                if name not in gt:
                    raise ValueError(f'{_OWNER}: clip {name!r} is in dataroot_lq but not in dataroot_gt.')
                if len(gt[name]) != len(frames):
                    raise ValueError(f'{_OWNER}: clip {name!r} has {len(frames)} LR but {len(gt[name])} GT frames.')
            self.reader.scanned['gt'] = gt
        return [ClipInfo(name, len(frames)) for name, frames in lq.items()]

    @staticmethod
    def _subset(clips: List[ClipInfo], names: Optional[List[str]]) -> List[ClipInfo]:
        if names is None:
            return clips
        by_name = {c.name: c for c in clips}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f'{_OWNER}: clips {unknown} (option clips) not found; available: {list(by_name)}')
        return [by_name[n] for n in names]

    def _load(self, index: int) -> dict:
        clip = self.clips[index]
        lqs = [self.reader.read('lq', clip.name, i) for i in range(clip.num_frames)]
        item = {'lq': torch.stack(img2tensor(lqs, bgr2rgb=True, float32=True), dim=0)}  # (T, 3, H, W)
        if self.has_gt:
            gts = []
            for i, img_lq in enumerate(lqs):
                img_gt = self.reader.read('gt', clip.name, i)
                if img_gt.shape[:2] != (img_lq.shape[0] * self.scale, img_lq.shape[1] * self.scale):
                    raise ValueError(f'{_OWNER}: GT {self.reader.describe("gt", clip.name, i)} is '
                                     f'{img_gt.shape[:2]}, not x{self.scale} of LR '
                                     f'{self.reader.describe("lq", clip.name, i)} {img_lq.shape[:2]}.')
                gts.append(img_gt)
            item['gt'] = torch.stack(img2tensor(gts, bgr2rgb=True, float32=True), dim=0)  # (T, 3, sH, sW)
        return item

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        if clip.name in self.cache:
            # clones: BasicSR's validation reshapes the returned tensors in place
            item = {k: v.clone() for k, v in self.cache[clip.name].items()}
        else:
            item = self._load(index)
        item.update(folder=clip.name, lq_path=self.reader.locate('lq', clip.name, 0), idx=index)
        return item

    def __len__(self) -> int:
        return len(self.clips)
