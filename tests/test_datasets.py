"""LRTIRecurrentDataset and LRTIVideoTestDataset on the disk and LMDB backends (tiny synthetic clips)."""
import copy
import os
import pickle
import random
import re

import cv2
import numpy as np
import pytest
import torch
from _clip_fixtures import SHARED_DATA, corrupt, write_pair
from basicsr.data import build_dataset
from basicsr.utils.matlab_functions import imresize

from lrti_plugin.data.lmdb_tools import make_lmdb
from lrti_plugin.data.recurrent_dataset import LRTIRecurrentDataset
from lrti_plugin.data.video_test_dataset import LRTIVideoTestDataset

CLIPS = {'a': (6, 48, 64), 'long_clip': (9, 40, 48), 'seq/x': (4, 32, 32)}  # name: (frames, GT h, GT w)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('clips')
    gt, lq = write_pair(root, CLIPS)
    res = make_lmdb(str(gt), str(root / 'gt.lmdb'), lq_root=str(lq), lr_out=str(root / 'lq.lmdb'), progress=False)
    return {'root': root, 'gt': str(gt), 'lq': str(lq), 'meta': res.meta_info,
            'gt_lmdb': res.gt_lmdb, 'lq_lmdb': res.lr_lmdb}


@pytest.fixture
def small(tmp_path):
    """One clip 'c' of 3 frames (GT 32x32) on disk, for tests that damage it."""
    gt, lq = write_pair(tmp_path, {'c': (3, 32, 32)})
    meta = tmp_path / 'meta.txt'
    meta.write_text('c 3 (32,32,3)\n')
    return {'gt': gt, 'lq': lq, 'opt': _train_opt({'gt': str(gt), 'lq': str(lq), 'meta': str(meta)}, 'disk')}


def _train_opt(data, backend, **over):
    lmdb = backend == 'lmdb'
    opt = {'name': 'train', 'type': 'LRTIRecurrentDataset', 'phase': 'train', 'scale': 4,
           'dataroot_gt': data['gt_lmdb'] if lmdb else data['gt'],
           'dataroot_lq': data['lq_lmdb'] if lmdb else data['lq'],
           'meta_info_file': data['meta'], 'io_backend': {'type': backend}, 'clip_frames': 3, 'gt_size': 32}
    opt.update(over)
    return opt


def _test_opt(data, backend, **over):
    lmdb = backend == 'lmdb'
    opt = {'name': 'val', 'type': 'LRTIVideoTestDataset', 'phase': 'val', 'scale': 4,
           'dataroot_gt': data['gt_lmdb'] if lmdb else data['gt'],
           'dataroot_lq': data['lq_lmdb'] if lmdb else data['lq'],
           'meta_info_file': data['meta'], 'io_backend': {'type': backend}}
    opt.update(over)
    return opt


def _interior_error(lq: torch.Tensor, gt: torch.Tensor) -> float:
    """Max |LR - bicubic(GT)| away from the 2-pixel border that the crop's own padding changes."""
    return (imresize(gt, 1 / 4) - lq)[:, 2:-2, 2:-2].abs().max().item()


def _rgb(path) -> torch.Tensor:
    return torch.from_numpy(cv2.imread(str(path))[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_recurrent_items_are_aligned_after_crop_and_augmentation(data, backend):
    opt = _train_opt(data, backend, use_hflip=True, use_rot=True, random_reverse=True, interval_list=[1, 2])
    before = copy.deepcopy(opt)
    ds = build_dataset(opt)
    assert isinstance(ds, LRTIRecurrentDataset) and len(ds) == 6 + 9 + 4
    random.seed(0)
    for index in range(0, len(ds), 3):
        item = ds[index]
        assert item['lq'].shape == (3, 3, 8, 8) and item['gt'].shape == (3, 3, 32, 32)
        assert item['lq'].dtype == torch.float32 and 0 <= item['gt'].min() and item['gt'].max() <= 1
        assert re.fullmatch(r'(a|long_clip|seq/x)/\d{8}', item['key'])
        for t in range(3):
            assert _interior_error(item['lq'][t], item['gt'][t]) < 1.5 / 255
        # the check can fail: one LR pixel of misalignment is far off
        assert _interior_error(item['lq'][0], torch.roll(item['gt'][0], 4, dims=2)) > 5 / 255
    assert opt == before and opt['io_backend'] == {'type': backend}


def test_recurrent_window_order_interval_and_reverse(data):
    opt = _train_opt(data, 'disk', clip_frames=2, interval_list=[2], random_reverse=True,
                     exclude_clips=['a', 'long_clip'])
    ds = LRTIRecurrentDataset(opt)
    assert len(ds) == 4
    frames = [_rgb(os.path.join(data['gt'], 'seq/x', f'{i:08d}.png')) for i in range(4)]
    orders = set()
    random.seed(1)
    for _ in range(20):
        item = ds[0]
        start = int(item['key'].split('/')[-1])
        assert item['key'].startswith('seq/x/') and start in (0, 1)
        forward = torch.equal(item['gt'][0], frames[start]) and torch.equal(item['gt'][1], frames[start + 2])
        backward = torch.equal(item['gt'][0], frames[start + 2]) and torch.equal(item['gt'][1], frames[start])
        assert forward or backward
        orders.add(forward)
    assert orders == {True, False}


def test_short_clips_raise_or_are_skipped(data):
    with pytest.raises(ValueError, match=r"shorter than clip_frames=5.*\['seq/x'\]"):
        LRTIRecurrentDataset(_train_opt(data, 'disk', clip_frames=5))
    assert len(LRTIRecurrentDataset(_train_opt(data, 'disk', clip_frames=5, skip_short_clips=True))) == 15
    with pytest.raises(ValueError, match='no clip left'):
        LRTIRecurrentDataset(_train_opt(data, 'disk', clip_frames=10, skip_short_clips=True))
    # interval 2 needs a span of 5 frames for 3 frames
    with pytest.raises(ValueError, match='seq/x'):
        LRTIRecurrentDataset(_train_opt(data, 'disk', interval_list=[2]))


def test_size_checks_at_construction(data):
    assert len(LRTIRecurrentDataset(_train_opt(data, 'lmdb', exclude_clips=['a']))) == 13
    with pytest.raises(ValueError, match=r"clip 'seq/x' has LR size 8x8, smaller than min_lq_size=9"):
        LRTIRecurrentDataset(_train_opt(data, 'disk', min_lq_size=9))
    with pytest.raises(ValueError, match="'seq/x'.*smaller than gt_size=36"):
        LRTIRecurrentDataset(_train_opt(data, 'disk', gt_size=36))
    with pytest.raises(ValueError, match='not a multiple of scale'):
        LRTIRecurrentDataset(_train_opt(data, 'disk', gt_size=30))
    with pytest.raises(ValueError, match="LRTIRecurrentDataset.use_filp: unknown key; did you mean use_hflip[?]"):
        LRTIRecurrentDataset(_train_opt(data, 'disk', use_filp=True))


def test_lmdb_keys_not_matching_meta_info(data, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('a 7 (48,64,3)\n')
    with pytest.raises(KeyError, match=r"clips0/lq\.lmdb has no key 'a/00000006'"):
        LRTIRecurrentDataset(_train_opt(data, 'lmdb', meta_info_file=str(meta)))
    meta.write_text('a 6 (48,64,3)\nzzz 3 (48,64,3)\n')
    with pytest.raises(KeyError, match=r"lq\.lmdb has no key 'zzz/00000000'"):
        LRTIVideoTestDataset(_test_opt(data, 'lmdb', meta_info_file=str(meta), dataroot_gt=None))
    # an LMDB without BasicSR's meta_info.txt: its keys are listed from the database
    write_pair(tmp_path / 'bare', {'c': (2, 8, 8)})
    res = make_lmdb(str(tmp_path / 'bare' / 'lq'), str(tmp_path / 'bare.lmdb'), progress=False)
    os.remove(os.path.join(res.gt_lmdb, 'meta_info.txt'))
    meta.write_text('c 3\n')
    with pytest.raises(KeyError, match=r"bare\.lmdb has no key 'c/00000002'"):
        LRTIVideoTestDataset({'dataroot_lq': res.gt_lmdb, 'dataroot_gt': None, 'meta_info_file': str(meta),
                              'io_backend': {'type': 'lmdb'}})
    meta.write_text('c 2\n')
    assert LRTIVideoTestDataset({'dataroot_lq': res.gt_lmdb, 'meta_info_file': str(meta),
                                 'io_backend': {'type': 'lmdb'}})[0]['lq'].shape == (2, 3, 2, 2)


def test_missing_and_unreadable_frames(small):
    os.remove(small['gt'] / 'c' / '00000002.png')
    with pytest.raises(FileNotFoundError, match=r'c/00000002\.png'):
        LRTIRecurrentDataset(small['opt'])
    cv2.imwrite(str(small['gt'] / 'c' / '00000002.png'), np.zeros((32, 32, 3), np.uint8))
    os.remove(small['lq'] / 'c' / '00000001.png')
    ds = LRTIRecurrentDataset(small['opt'])  # first and last frames exist: found at load time
    with pytest.raises(FileNotFoundError, match=r'lq/c/00000001\.png'):
        ds[0]
    cv2.imwrite(str(small['lq'] / 'c' / '00000001.png'), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r'gt/c/00000001\.png is \(32, 32\), not x4 of LR .*lq/c/00000001\.png'):
        ds[0]
    corrupt(small['gt'] / 'c' / '00000000.png')
    with pytest.raises(ValueError, match=r'Unreadable image: .*gt/c/00000000\.png'):
        ds[0]


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_video_test_dataset_whole_clips(data, backend):
    opt = _test_opt(data, backend)
    before = copy.deepcopy(opt)
    ds = build_dataset(opt)
    assert isinstance(ds, LRTIVideoTestDataset) and len(ds) == 3
    assert {f: ds.data_info['folder'].count(f) for f in CLIPS} == {'a': 6, 'long_clip': 9, 'seq/x': 4}
    item = ds[1]
    assert item['folder'] == 'long_clip' and item['idx'] == 1
    assert item['lq'].shape == (9, 3, 10, 12) and item['gt'].shape == (9, 3, 40, 48)
    assert torch.equal(item['lq'][4], _rgb(os.path.join(data['lq'], 'long_clip', '00000004.png')))
    assert torch.equal(item['gt'][8], _rgb(os.path.join(data['gt'], 'long_clip', '00000008.png')))
    expected_path = 'long_clip/00000000' if backend == 'lmdb' else os.path.join(data['lq'], 'long_clip/00000000.png')
    assert item['lq_path'] == expected_path
    assert opt == before


def test_video_test_dataset_options(data):
    ds = LRTIVideoTestDataset(_test_opt(data, 'lmdb', num_frame=2, clips=['long_clip', 'a'], dataroot_gt=None))
    assert [ds[i]['folder'] for i in range(len(ds))] == ['long_clip', 'a'] and 'gt' not in ds[0]
    assert ds[1]['lq'].shape == (2, 3, 12, 16) and ds.data_info['folder'] == ['long_clip'] * 2 + ['a'] * 2

    cached = LRTIVideoTestDataset(_test_opt(data, 'disk', cache_data=True, num_frame=20))
    first = cached[2]
    assert first['lq'].shape[0] == 4  # num_frame beyond the clip: the whole clip
    first['lq'].unsqueeze_(0).mul_(0)  # what BasicSR's validation does in place must not reach the cache
    assert torch.equal(cached[2]['gt'], LRTIVideoTestDataset(_test_opt(data, 'disk'))[2]['gt'])
    assert cached[2]['lq'].shape == (4, 3, 8, 8) and cached[2]['lq'].max() > 0

    with pytest.raises(ValueError, match=r"clips \['nope'\]"):
        LRTIVideoTestDataset(_test_opt(data, 'disk', clips=['nope']))
    with pytest.raises(ValueError, match='meta_info_file is required'):
        LRTIVideoTestDataset(_test_opt(data, 'lmdb', meta_info_file=None))


def test_video_test_dataset_scans_folders_without_meta_info(tmp_path):
    gt, lq = write_pair(tmp_path, {'x': (3, 16, 16), 'deep/y': (2, 8, 12)})
    for folder in (gt, lq):  # names that sort wrongly as strings: frame9 < frame10
        for clip in ('x', 'deep/y'):
            files = sorted(os.listdir(folder / clip))
            for i, name in enumerate(files):
                os.rename(folder / clip / name, folder / clip / f'frame{9 + i}.png')
    ds = LRTIVideoTestDataset(_test_opt({'gt': str(gt), 'lq': str(lq), 'meta': None}, 'disk'))
    assert [ds[i]['folder'] for i in range(2)] == ['deep/y', 'x']
    item = ds[1]
    assert item['lq_path'].endswith('x/frame9.png')
    assert torch.equal(item['gt'][2], _rgb(gt / 'x' / 'frame11.png'))

    os.remove(gt / 'x' / 'frame11.png')
    with pytest.raises(ValueError, match="clip 'x' has 3 LR but 2 GT frames"):
        LRTIVideoTestDataset(_test_opt({'gt': str(gt), 'lq': str(lq), 'meta': None}, 'disk'))
    cv2.imwrite(str(gt / 'x' / 'frame11.png'), np.zeros((16, 20, 3), np.uint8))
    ds = LRTIVideoTestDataset(_test_opt({'gt': str(gt), 'lq': str(lq), 'meta': None}, 'disk'))
    with pytest.raises(ValueError, match=r'x/frame11\.png is \(16, 20\), not x4'):
        ds[1]


@pytest.mark.skipif(not (SHARED_DATA / 'vid4' / 'BIx4' / 'city').is_dir(), reason='shared/data/vid4 absent')
def test_real_vid4_clip():
    vid4 = SHARED_DATA / 'vid4'
    ds = LRTIVideoTestDataset({'dataroot_gt': str(vid4 / 'GT'), 'dataroot_lq': str(vid4 / 'BIx4'), 'scale': 4,
                               'meta_info_file': str(vid4 / 'meta_info_Vid4_GT.txt'), 'io_backend': {'type': 'disk'},
                               'num_frame': 2, 'clips': ['city']})
    item = ds[0]
    assert item['lq'].shape == (2, 3, 144, 176) and item['gt'].shape == (2, 3, 576, 704)
    assert _interior_error(item['lq'][1], item['gt'][1]) < 2 / 255


def test_lmdb_dataset_pickles_and_reads_in_dataloader_workers(data):
    ds = LRTIVideoTestDataset(_test_opt(data, 'lmdb', cache_data=False, num_frame=1))
    ds[0]  # opens the LMDB in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[2]['gt'], ds[2]['gt'])
    train = LRTIRecurrentDataset(_train_opt(data, 'lmdb'))
    train[0]  # the parent holds both LMDBs open when the worker is forked
    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=1)  # a forked worker reopens the LMDB
    batch = next(iter(loader))
    assert batch['lq'].shape == (2, 3, 3, 8, 8) and len(batch['key']) == 2


def test_one_crop_for_every_frame_of_a_clip(data):
    """LRTIRecurrentDataset draws one crop per item: all T frames (LR and GT) come from the same region."""
    from test_long_clip_dataset import _crop_offset, _rgb

    ds = build_dataset(_train_opt(data, 'disk', gt_size=16, clip_frames=6, exclude_clips=['long_clip', 'seq/x'],
                                  interval_list=[1]))
    random.seed(2)
    item = ds[0]
    first = int(item['key'].rsplit('/', 1)[1])  # clip 'a' has exactly 6 frames: the window starts at 0
    where = {_crop_offset(item['gt'][t], _rgb(str(data['gt']), 'a', first + t), 4) for t in range(6)}
    assert len(where) == 1, f'frames cropped at different places: {where}'
    y, x = where.pop()
    for t in range(6):
        assert _crop_offset(item['lq'][t], _rgb(str(data['lq']), 'a', first + t), 1) == (y // 4, x // 4)


def test_num_frame_is_the_old_name_of_clip_frames(data):
    """One name for T in both training datasets (clip_frames); BasicSR's num_frame still works, with a warning."""
    opt = {k: v for k, v in _train_opt(data, 'disk').items() if k != 'clip_frames'}
    with pytest.warns(DeprecationWarning, match='num_frame is deprecated, use clip_frames'):
        old = LRTIRecurrentDataset({**opt, 'num_frame': 3})
    random.seed(0)
    a = old[0]
    random.seed(0)
    b = LRTIRecurrentDataset({**opt, 'clip_frames': 3})[0]
    assert a['key'] == b['key'] and torch.equal(a['lq'], b['lq']) and a['lq'].shape[0] == 3
    with pytest.raises(ValueError, match='give clip_frames only'):
        LRTIRecurrentDataset({**opt, 'clip_frames': 3, 'num_frame': 3})
    with pytest.raises(ValueError, match='LRTIRecurrentDataset.clip_frames: expected a positive int, got 2.0'):
        LRTIRecurrentDataset({**opt, 'clip_frames': 2.0})
