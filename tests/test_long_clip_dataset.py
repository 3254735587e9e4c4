"""LRTILongClipDataset on the disk and LMDB backends (tiny synthetic clips of different lengths and names)."""
import copy
import logging
import os
import random

import cv2
import pytest
import torch
from _clip_fixtures import write_pair
from basicsr.data import build_dataset
from basicsr.utils import get_root_logger
from basicsr.utils.matlab_functions import imresize

from lrti_plugin.data.lmdb_tools import make_lmdb
from lrti_plugin.data.long_clip_dataset import LRTILongClipDataset

CLIPS = {'a': (12, 32, 32), 'seq/b': (7, 32, 48), 'c': (4, 32, 32)}  # name: (frames, GT h, GT w)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('long_clips')
    gt, lq = write_pair(root, CLIPS)
    res = make_lmdb(str(gt), str(root / 'gt.lmdb'), lq_root=str(lq), lr_out=str(root / 'lq.lmdb'), progress=False)
    return {'gt': str(gt), 'lq': str(lq), 'meta': res.meta_info, 'gt_lmdb': res.gt_lmdb, 'lq_lmdb': res.lr_lmdb}


def _opt(data, backend='disk', **over):
    lmdb = backend == 'lmdb'
    opt = {'name': 'train', 'type': 'LRTILongClipDataset', 'phase': 'train', 'scale': 4,
           'dataroot_gt': data['gt_lmdb'] if lmdb else data['gt'],
           'dataroot_lq': data['lq_lmdb'] if lmdb else data['lq'],
           'meta_info_file': data['meta'], 'io_backend': {'type': backend}, 'gt_size': 32,
           'long_frames': 6, 'clip_frames': 3, 'num_clips': 2}
    opt.update(over)
    return opt


def _rgb(root, clip, index) -> torch.Tensor:
    img = cv2.imread(os.path.join(root, clip, f'{index:08d}.png'))
    return torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.


def _interior_error(lq: torch.Tensor, gt: torch.Tensor) -> float:
    """Max |LR - bicubic(GT)| away from the 2-pixel border that the crop's own padding changes."""
    return (imresize(gt, 1 / 4) - lq)[:, 2:-2, 2:-2].abs().max().item()


def _clip_of(ds, index):
    return ds.clips[ds._item_clip[index]]


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_shapes_and_alignment_under_augmentation(data, backend):
    opt = _opt(data, backend, use_hflip=True, use_rot=True, random_reverse=True, num_clips=3)
    before = copy.deepcopy(opt)
    ds = build_dataset(opt)
    assert isinstance(ds, LRTILongClipDataset) and len(ds) == 12 + 7  # 'c' (4 frames) is skipped
    random.seed(0)
    for index in range(0, len(ds), 2):
        item = ds[index]
        assert set(item) == {'lq', 'gt', 'starts', 'key'}
        assert item['lq'].shape == (6, 3, 8, 8) and item['gt'].shape == (3, 3, 3, 32, 32)
        assert item['starts'].dtype == torch.int64 and item['starts'].shape == (3,)
        clip = _clip_of(ds, index)
        first = int(item['key'].rsplit('/', 1)[1])
        assert item['key'] == f'{clip.name}/{first:08d}' and 0 <= first <= clip.num_frames - 6
        for n, s in enumerate(item['starts'].tolist()):
            for t in range(3):
                # the window's GT is the GT of the LR frame at its position, after the shared crop and flips
                assert _interior_error(item['lq'][s + t], item['gt'][n, t]) < 1.5 / 255
            # ...and not that of a neighbouring frame: the check can fail
            other = s + 3 if s + 3 < 6 else s - 1
            assert _interior_error(item['lq'][other], item['gt'][n, 0]) > 5 / 255
    assert opt == before and opt['io_backend'] == {'type': backend}


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_window_gt_equals_the_frames_read_directly(data, backend):
    ds = LRTILongClipDataset(_opt(data, backend, exclude_clips=['seq/b'], long_frames=8, clip_frames=3,
                                  num_clips=3))
    random.seed(3)
    for _ in range(4):
        item = ds[0]
        first = int(item['key'].split('/')[1])
        assert item['key'].startswith('a/') and 0 <= first <= 4
        for p in range(8):
            assert torch.equal(item['lq'][p], _rgb(data['lq'], 'a', first + p))
        for n, s in enumerate(item['starts'].tolist()):
            for t in range(3):
                assert torch.equal(item['gt'][n, t], _rgb(data['gt'], 'a', first + s + t))


def test_reversed_long_clip_places_windows_in_the_reversed_order(data):
    ds = LRTILongClipDataset(_opt(data, exclude_clips=['seq/b'], random_reverse=True, num_clips=1,
                                  window_sampling='even'))
    seen = set()
    random.seed(1)
    for _ in range(12):
        item = ds[0]
        first = int(item['key'].split('/')[1])
        forward = torch.equal(item['lq'][0], _rgb(data['lq'], 'a', first))
        frame_at = list(range(first, first + 6))[::1 if forward else -1]  # frame index at each position
        seen.add(forward)
        assert item['starts'].tolist() == [1]  # N = 1: the middle start (6 - 3) // 2
        for p in range(6):
            assert torch.equal(item['lq'][p], _rgb(data['lq'], 'a', frame_at[p]))
        for t in range(3):
            assert torch.equal(item['gt'][0, t], _rgb(data['gt'], 'a', frame_at[1 + t]))
    assert seen == {True, False}


def test_windows_stay_inside_the_long_clip(data):
    ds = LRTILongClipDataset(_opt(data, long_frames=7, clip_frames=3, num_clips=4, short_clips='whole'))
    seen = set()
    for seed in range(300):
        random.seed(seed)
        starts = ds._window_starts(7)
        assert len(starts) == 4 and all(0 <= s <= 4 for s in starts)
        seen.update(starts)
    assert seen == set(range(5))  # every possible start is drawn
    random.seed(0)
    for index in range(len(ds)):  # whole: 'c' gives its 4 frames, so its windows start at 0 or 1
        item = ds[index]
        length = item['lq'].shape[0]
        assert length == min(7, _clip_of(ds, index).num_frames)
        assert item['starts'].min() >= 0 and item['starts'].max() + 3 <= length


def test_even_window_sampling(data):
    ds = LRTILongClipDataset(_opt(data, long_frames=12, clip_frames=4, num_clips=3, window_sampling='even',
                                  short_clips='whole'))
    assert ds._window_starts(12) == [0, 4, 8]
    assert ds._window_starts(7) == [0, 2, 3]  # a whole 7-frame clip: 1.5 rounds up
    assert ds._window_starts(4) == [0, 0, 0]
    four = LRTILongClipDataset(_opt(data, long_frames=12, clip_frames=4, num_clips=4, window_sampling='even'))
    assert four._window_starts(12) == [0, 3, 5, 8]  # 8/3 and 16/3 rounded
    item = four[0]
    assert item['key'] == 'a/00000000' and item['starts'].tolist() == [0, 3, 5, 8]


def test_reads_only_the_gt_frames_the_windows_need(data):
    ds = LRTILongClipDataset(_opt(data, exclude_clips=['seq/b'], long_frames=12, clip_frames=2, num_clips=3,
                                  window_sampling='even'))  # starts 0, 5, 10
    reads = []
    read = ds.reader.read
    ds.reader.read = lambda client, clip, index: reads.append((client, index)) or read(client, clip, index)
    item = ds[0]
    assert item['starts'].tolist() == [0, 5, 10]
    assert sorted(i for c, i in reads if c == 'gt') == [0, 1, 5, 6, 10, 11]
    assert sorted(i for c, i in reads if c == 'lq') == list(range(12))


def test_short_clips_skip_or_whole(data, caplog):
    logger = get_root_logger()
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger='basicsr'):
            skip = LRTILongClipDataset(_opt(data, long_frames=7))
            assert [c.name for c in skip.clips] == ['a', 'seq/b'] and len(skip) == 19
            assert 'skipped 1 clips shorter than 7 frames (short_clips: skip)' in caplog.text
            caplog.clear()
            whole = LRTILongClipDataset(_opt(data, long_frames=8, clip_frames=5, short_clips='whole'))
            assert 'skipped 1 clips shorter than 5 frames (short_clips: whole)' in caplog.text
            assert '1 clips shorter than 8 frames give their whole length' in caplog.text
    finally:
        logger.removeHandler(caplog.handler)
    assert [c.name for c in whole.clips] == ['a', 'seq/b']
    random.seed(0)
    assert whole[12]['lq'].shape == (7, 3, 8, 8) and whole[0]['lq'].shape == (8, 3, 8, 8)
    with pytest.raises(ValueError, match=r'long_frames=13 is longer than every clip \(longest: 12 frames'):
        LRTILongClipDataset(_opt(data, long_frames=13, clip_frames=4))
    with pytest.raises(ValueError, match=r'clip_frames=13 is longer than every clip'):
        LRTILongClipDataset(_opt(data, long_frames=14, clip_frames=13, short_clips='whole'))
    with pytest.raises(ValueError, match='unequal lengths.*batch_size_per_gpu=2'):
        LRTILongClipDataset(_opt(data, long_frames=8, short_clips='whole', batch_size_per_gpu=2))
    # equal lengths after all (no clip shorter than long_frames): batching is fine
    assert len(LRTILongClipDataset(_opt(data, long_frames=4, short_clips='whole', batch_size_per_gpu=2))) == 23


@pytest.mark.parametrize('over, match', [
    ({'clip_frames': 7}, r'clip_frames \(7\) must not exceed long_frames \(6\)'),
    ({'num_clips': 0}, r"LRTILongClipDataset.num_clips: expected a positive int, got 0"),
    ({'long_frames': 2.5}, r"LRTILongClipDataset.long_frames: expected a positive int, got 2.5"),
    ({'clip_frames': None}, r"option 'clip_frames' is required"),
    ({'window_sampling': 'uniform'}, r"LRTILongClipDataset.window_sampling: expected one of \['random', 'even'\]"),
    ({'short_clips': 'pad'}, r"LRTILongClipDataset.short_clips: expected one of \['skip', 'whole'\]"),
    ({'num_frame': 3}, r"LRTILongClipDataset.num_frame: unknown key"),
    ({'gt_size': 30}, 'not a multiple of scale'),
    ({'gt_size': 36}, r"'a' \(32x32\) is smaller than gt_size=36"),
    ({'exclude_clips': ['a', 'seq/b', 'c']}, 'no clip in the meta info'),
])
def test_bad_options(data, over, match):
    opt = _opt(data, **over)
    before = copy.deepcopy(opt)
    with pytest.raises(ValueError, match=match):
        LRTILongClipDataset(opt)
    assert opt == before


def test_lmdb_batches_in_a_dataloader_worker(data):
    ds = LRTILongClipDataset(_opt(data, 'lmdb', num_clips=2))
    ds[0]  # the parent holds the LMDBs open when the worker is forked
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)))
    assert batch['lq'].shape == (2, 6, 3, 8, 8) and batch['gt'].shape == (2, 2, 3, 3, 32, 32)
    assert batch['starts'].shape == (2, 2) and len(batch['key']) == 2


def _crop_offset(window: torch.Tensor, source: torch.Tensor, step: int) -> tuple:
    """The (y, x) where ``window`` (3, h, w) sits in ``source`` (3, H, W), searching offsets in steps of ``step``."""
    h, w = window.shape[1:]
    found = [(y, x) for y in range(0, source.shape[1] - h + 1, step) for x in range(0, source.shape[2] - w + 1, step)
             if torch.equal(source[:, y:y + h, x:x + w], window)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_one_crop_for_every_frame_of_the_long_clip(data, backend):
    """The crop is drawn once per item: every LR frame and every window's GT come from the same region (a crop
    redrawn per frame would still pair each LR frame with its GT, so alignment alone cannot show it)."""
    ds = LRTILongClipDataset(_opt(data, backend, exclude_clips=['seq/b'], gt_size=16, long_frames=12,
                                  clip_frames=3, num_clips=3))  # clip 'a' is 32x32: 5 x 5 possible GT crops
    random.seed(5)
    offsets = set()
    for _ in range(3):
        item = ds[0]
        where = {_crop_offset(item['gt'][n, t], _rgb(data['gt'], 'a', s + t), 4)
                 for n, s in enumerate(item['starts'].tolist()) for t in range(3)}
        assert len(where) == 1, f'windows cropped at different places: {where}'
        y, x = where.pop()
        for p in range(12):
            assert _crop_offset(item['lq'][p], _rgb(data['lq'], 'a', p), 1) == (y // 4, x // 4)
        offsets.add((y, x))
    assert len(offsets) > 1, 'the crop never moved between items'
