"""scripts/make_lmdb.py and lrti_plugin.data.lmdb_tools: round trips and every refused input."""
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _clip_fixtures import SHARED_DATA, corrupt, write_clip, write_pair
from basicsr.data.data_util import paths_from_lmdb
from basicsr.utils import FileClient, imfrombytes
from basicsr.utils.matlab_functions import imresize

from lrti_plugin.data import lmdb_tools
from lrti_plugin.data.clip_io import read_meta_info
from lrti_plugin.data.lmdb_tools import (
    DiskSpaceError,
    FrameIndexError,
    FrameSizeError,
    LmdbExistsError,
    MissingFrameError,
    PairMismatchError,
    UnreadableImageError,
    make_lmdb,
)

REPO = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if '.tmp-' in p.name or p.name.endswith('.lmdb'))


def _get(lmdb_path, key):
    client = FileClient('lmdb', db_paths=[str(lmdb_path)], client_keys=['x'])
    content = client.get(key, 'x')
    return None if content is None else imfrombytes(content)


def test_round_trip_reds_layout_with_make_lr(tmp_path):
    src = tmp_path / 'src'
    imgs_a = write_clip(src, 'a', 3, 32, 48)
    imgs_b = write_clip(src, 'clip_b', 5, 24, 16, seed=7)
    out = tmp_path / 'out' / 'train.lmdb'
    res = make_lmdb(str(src), str(out), layout='reds', make_lr=4, compress_level=3, progress=False)

    assert res.gt_lmdb == str(out) and res.lr_lmdb == str(tmp_path / 'out' / 'train_LRx4.lmdb')
    assert res.meta_info == str(tmp_path / 'out' / 'train_meta_info.txt') and res.cropped == []
    assert (tmp_path / 'out' / 'train_meta_info.txt').read_text() == 'a 3 (32,48,3)\nclip_b 5 (24,16,3)\n'
    assert paths_from_lmdb(str(out))[:4] == ['a/00000000', 'a/00000001', 'a/00000002', 'clip_b/00000000']
    inner = (out / 'meta_info.txt').read_text().splitlines()
    assert inner[0] == 'a/00000000.png (32,48,3) 3' and len(inner) == 8
    assert (Path(res.lr_lmdb) / 'meta_info.txt').read_text().splitlines()[3] == 'clip_b/00000000.png (6,4,3) 3'
    np.testing.assert_array_equal(_get(out, 'clip_b/00000004'), imgs_b[4])
    assert _get(out, 'clip_b/00000005') is None
    lr = _get(res.lr_lmdb, 'a/00000001')
    assert lr.shape == (8, 12, 3)
    ref = np.clip(imresize(imgs_a[1] / 255., 1 / 4) * 255, 0, 255)
    assert np.abs(lr - ref).max() <= 1.0
    assert _leftovers(tmp_path / 'out') == ['train.lmdb', 'train_LRx4.lmdb']


def test_vimeo_and_auto_layouts_name_clips_and_sort_naturally(tmp_path):
    vimeo = tmp_path / 'vimeo'
    imgs = write_clip(vimeo, '00001/0001', 3, 8, 8, names=['im1.png', 'im2.png', 'im3.png'])
    write_clip(vimeo, '00001/0002', 2, 8, 8, names=['im1.png', 'im2.png'])
    res = make_lmdb(str(vimeo), str(tmp_path / 'v.lmdb'), layout='vimeo', progress=False)
    assert list(res.clips) == ['00001/0001', '00001/0002']
    assert [c.name for c in read_meta_info(res.meta_info)] == ['00001/0001', '00001/0002']
    np.testing.assert_array_equal(_get(res.gt_lmdb, '00001/0001/00000002'), imgs[2])

    auto = tmp_path / 'auto'
    imgs = write_clip(auto, 'x/y', 3, 8, 8, names=['frame9.png', 'frame10.png', 'frame11.png'])
    res = make_lmdb(str(auto), str(tmp_path / 'a.lmdb'), progress=False, meta_info=str(tmp_path / 'm.txt'))
    assert res.clips == {'x/y': (3, (8, 8, 3))} and (tmp_path / 'm.txt').is_file()
    # natural order: frame9 is index 0 (a plain string sort would put it last)
    np.testing.assert_array_equal(_get(res.gt_lmdb, 'x/y/00000000'), imgs[0])
    np.testing.assert_array_equal(_get(res.gt_lmdb, 'x/y/00000002'), imgs[2])


def test_make_lr_crops_gt_to_a_multiple_of_the_scale(tmp_path):
    write_clip(tmp_path / 'src', 'odd', 2, 34, 50)
    res = make_lmdb(str(tmp_path / 'src'), str(tmp_path / 'o.lmdb'), make_lr=4, progress=False)
    assert res.cropped == ['odd'] and res.clips['odd'] == (2, (32, 48, 3))
    assert _get(res.gt_lmdb, 'odd/00000001').shape == (32, 48, 3)
    assert _get(res.lr_lmdb, 'odd/00000001').shape == (8, 12, 3)


def test_missing_frame_index_is_reported(tmp_path):
    write_clip(tmp_path / 'src', 'gap', 3, 8, 8, names=['00000000.png', '00000002.png', '00000003.png'])
    with pytest.raises(MissingFrameError, match=r"'gap'.*index 1 is missing.*00000000.png.*00000002.png"):
        make_lmdb(str(tmp_path / 'src'), str(tmp_path / 'o.lmdb'), progress=False)
    with pytest.raises(FrameIndexError, match='same index'):
        write_clip(tmp_path / 'dup', 'd', 2, 8, 8, names=['1.png', '01.png'])
        make_lmdb(str(tmp_path / 'dup'), str(tmp_path / 'o.lmdb'), progress=False)
    assert _leftovers(tmp_path) == []


def test_unreadable_image_aborts_and_leaves_nothing(tmp_path):
    write_clip(tmp_path / 'src', 'a', 2, 8, 8)
    write_clip(tmp_path / 'src', 'b', 3, 8, 8)
    corrupt(tmp_path / 'src' / 'b' / '00000001.png')
    with pytest.raises(UnreadableImageError, match=r'b/00000001\.png') as err:
        make_lmdb(str(tmp_path / 'src'), str(tmp_path / 'o.lmdb'), make_lr=2, progress=False)
    assert err.value.culprit.endswith('00000001.png')
    assert _leftovers(tmp_path) == [] and not (tmp_path / 'o_meta_info.txt').exists()


def test_frame_of_another_size_is_reported(tmp_path):
    write_clip(tmp_path / 'src', 'a', 2, 8, 8)
    cv2.imwrite(str(tmp_path / 'src' / 'a' / '00000002.png'), np.zeros((8, 12, 3), np.uint8))
    with pytest.raises(FrameSizeError, match=r"'a'.*00000002\.png is \(8, 12, 3\).*\(8, 8, 3\)"):
        make_lmdb(str(tmp_path / 'src'), str(tmp_path / 'o.lmdb'), progress=False)
    assert _leftovers(tmp_path) == []


def test_existing_lmdb_is_refused_and_untouched_unless_overwrite(tmp_path):
    write_clip(tmp_path / 'src', 'a', 2, 8, 8)
    out = tmp_path / 'o.lmdb'
    make_lmdb(str(tmp_path / 'src'), str(out), progress=False)
    digest = hashlib.sha256((out / 'data.mdb').read_bytes()).hexdigest()
    write_clip(tmp_path / 'src', 'b', 1, 8, 8)
    with pytest.raises(LmdbExistsError, match='o.lmdb already exists'):
        make_lmdb(str(tmp_path / 'src'), str(out), progress=False)
    assert hashlib.sha256((out / 'data.mdb').read_bytes()).hexdigest() == digest
    assert paths_from_lmdb(str(out)) == ['a/00000000', 'a/00000001']

    make_lmdb(str(tmp_path / 'src'), str(out), overwrite=True, progress=False)
    assert paths_from_lmdb(str(out)) == ['a/00000000', 'a/00000001', 'b/00000000']
    assert _leftovers(tmp_path) == ['o.lmdb']


def test_gt_lq_pair_round_trip_and_mismatches(tmp_path):
    gt, lq = write_pair(tmp_path / 'ok', {'a': (2, 16, 24), 'b': (3, 8, 8)})
    res = make_lmdb(str(gt), str(tmp_path / 'p.lmdb'), lq_root=str(lq), scale=4, progress=False)
    np.testing.assert_array_equal(_get(res.lr_lmdb, 'a/00000001'), cv2.imread(str(lq / 'a' / '00000001.png')))
    assert make_lmdb(str(gt), None, lq_root=str(lq), scale=4, check_only=True, progress=False).gt_lmdb is None

    with pytest.raises(PairMismatchError, match=r"'a'.*not x2 of LQ"):
        make_lmdb(str(gt), None, lq_root=str(lq), scale=2, check_only=True, progress=False)
    os.remove(lq / 'b' / '00000002.png')
    with pytest.raises(PairMismatchError, match="'b': 3 GT frames but 2 LQ"):
        make_lmdb(str(gt), str(tmp_path / 'q.lmdb'), lq_root=str(lq), progress=False)
    cv2.imwrite(str(lq / 'b' / '00000002.png'), np.zeros((3, 2, 3), np.uint8))
    with pytest.raises(FrameSizeError, match=r'LQ 00000002\.png'):
        make_lmdb(str(gt), str(tmp_path / 'q.lmdb'), lq_root=str(lq), progress=False)
    with pytest.raises(ValueError, match='make_lr and lq_root'):
        make_lmdb(str(gt), str(tmp_path / 'q.lmdb'), lq_root=str(lq), make_lr=4, progress=False)
    assert _leftovers(tmp_path) == ['p.lmdb', 'p_LRx4.lmdb']


def test_insufficient_disk_space_is_refused(tmp_path, monkeypatch):
    write_clip(tmp_path / 'src', 'a', 2, 8, 8)
    usage = lmdb_tools.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(lmdb_tools.shutil, 'disk_usage', lambda _: usage._replace(free=10))
    with pytest.raises(DiskSpaceError, match=r'Not enough free space in .*MiB needed'):
        make_lmdb(str(tmp_path / 'src'), str(tmp_path / 'o.lmdb'), progress=False)
    assert _leftovers(tmp_path) == []


def test_cli_help_and_failure_exit_code(tmp_path):
    spec = importlib.util.spec_from_file_location('make_lmdb_cli', REPO / 'scripts' / 'make_lmdb.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(['--help'])
    assert exit_info.value.code == 0

    write_clip(tmp_path / 'src', 'broken_clip', 2, 8, 8)
    corrupt(tmp_path / 'src' / 'broken_clip' / '00000001.png')
    proc = subprocess.run([sys.executable, str(REPO / 'scripts' / 'make_lmdb.py'), '--gt', str(tmp_path / 'src'),
                           '--out', str(tmp_path / 'o.lmdb'), '--make-lr', '2', '--no-progress'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert 'broken_clip/00000001.png' in proc.stderr and 'Unreadable' in proc.stderr
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not (SHARED_DATA / 'vid4' / 'GT' / 'city').is_dir(), reason='shared/data/vid4 absent')
def test_real_vid4_pair_passes_the_consistency_check(tmp_path):
    for part in ('GT', 'BIx4'):
        (tmp_path / part).mkdir()
        os.symlink(SHARED_DATA / 'vid4' / part / 'city', tmp_path / part / 'city')
    res = make_lmdb(str(tmp_path / 'GT'), None, lq_root=str(tmp_path / 'BIx4'), scale=4, check_only=True,
                    progress=False)
    assert res.clips == {'city': (34, (576, 704, 3))}
