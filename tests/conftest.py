"""Shared fixtures: tiny demo LMDBs and tiny option files built in a temporary folder.

The device the tests run on comes from ``LRTI_TEST_DEVICE`` (default ``cpu``); CUDA-only cases skip
themselves when no GPU is present.
"""
import os
import sys
from pathlib import Path

import pytest
import torch

import lrti_plugin  # noqa: F401  (the torchvision shim must precede the first basicsr import)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def device() -> torch.device:
    dev = torch.device(os.environ.get('LRTI_TEST_DEVICE', 'cpu'))
    if dev.type != 'cpu' and not torch.cuda.is_available():
        pytest.skip(f'LRTI_TEST_DEVICE={dev} but CUDA is not available')
    return dev


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory) -> Path:
    """Demo clips (small) as LMDBs: ``train_GT.lmdb`` (3 clips x 8 frames) and ``heldout_GT.lmdb`` (1 clip),
    with their ``*_LRx4.lmdb`` and ``*_meta_info.txt``; GT 144x144, LR 36x36."""
    return make_demo_lmdbs(tmp_path_factory.mktemp('tiny_data'), ('astronaut', 'coffee', 'rocket'), 8, 4, 144)


def make_demo_lmdbs(root: Path, photos, train_frames: int, heldout_frames: int, size: int) -> Path:
    """Demo clips of ``size`` x ``size`` GT in ``root``: ``train_GT.lmdb`` (one clip ``<photo>_0`` per photo) and
    ``heldout_GT.lmdb`` (``chelsea``), each with its x4 ``*_LRx4.lmdb`` and ``*_meta_info.txt``."""
    from lrti_demo.clips import ClipSpec, write_clips
    from lrti_plugin.data.lmdb_tools import make_lmdb

    splits = {'train': {f'{p}_0': ClipSpec(p, train_frames, size, size, seed=i) for i, p in enumerate(photos)},
              'heldout': {'chelsea': ClipSpec('chelsea', heldout_frames, size, size, seed=7)}}
    for split, specs in splits.items():
        write_clips(str(root / f'{split}_png'), specs)
        make_lmdb(str(root / f'{split}_png'), str(root / f'{split}_GT.lmdb'), layout='reds', make_lr=4,
                  progress=False)
    return root


def point_at(opt: dict, data_dir: Path) -> dict:
    """Point every dataset of ``opt`` at the files of the same names in ``data_dir`` (in place)."""
    for ds in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            ds[key] = str(data_dir / os.path.basename(ds[key]))
    return opt


def tiny_options(data_dir: Path, name: str, overrides: dict | None = None) -> dict:
    """``options/train_demo.yml`` shrunk for tests (a few iterations of an 8-channel net) on ``data_dir``."""
    from lrti_plugin.utils.options import apply_overrides, load_options

    opt = point_at(load_options(str(REPO / 'options' / 'train_demo.yml')), data_dir)
    base = {
        'name': name, 'network_g.num_feat': 8, 'network_g.num_block': 1, 'datasets.train.clip_frames': 3,
        'datasets.train.num_worker_per_gpu': 0, 'train.total_iter': 4, 'train.scheduler.periods': [4],
        'train.fix_flow': None, 'network_g.spynet_path': None, 'path.pretrain_network_g': None,
        'path.strict_load_g': True, 'val.val_freq': 2, 'logger.print_freq': 1,
        'logger.save_checkpoint_freq': 2,
    }
    return apply_overrides(opt, {**base, **(overrides or {})})


def to_lrti(opt: dict, long_frames: int = 6, clip_frames: int = 3, num_clips: int = 2, **lrti) -> dict:
    """Switch tiny options to the LRTI strategy: long-clip dataset + a ``train.lrti`` block (in place)."""
    ds = opt['datasets']['train']
    for key in ('clip_frames', 'num_frame', 'interval_list'):
        ds.pop(key, None)
    ds.update(type='LRTILongClipDataset', long_frames=long_frames, clip_frames=clip_frames, num_clips=num_clips,
              batch_size_per_gpu=1)
    opt['train']['lrti'] = dict(lrti)
    return opt


def run_module(module: str, args: list, cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run ``python -m module args`` in ``cwd``; returns the CompletedProcess (output captured as text)."""
    import subprocess

    full_env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '2', **(env or {})}
    return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def make_model(data_dir: Path, tmp_path: Path, device, overrides: dict | None = None, is_train: bool = True,
               lrti_geometry: dict | None = None, tiny_flow: bool = False, dtype=torch.float32):
    """The tests' one factory of ``LRTIModel``: the tiny options on ``data_dir`` plus ``overrides``.

    Args:
        lrti_geometry: ``long_frames``, ``clip_frames``, ``num_clips``: a long-clip train dataset and a
            ``train.lrti`` block (its keys as overrides, e.g. ``train.lrti.mode``).
        tiny_flow: build the nets with ``_flow_stub.TinyFlow`` in place of SpyNet (tests whose subject is
            propagation); the optimiser and the EMA are built over it as over any net.
        dtype: the networks' dtype (float64 for exactness tests).
    """
    from _flow_stub import tiny_flow_archs

    from lrti_plugin.models.lrti_model import LRTIModel
    from lrti_plugin.utils.options import apply_overrides

    opt = tiny_options(data_dir, 'unit')
    if lrti_geometry is not None:
        to_lrti(opt, **lrti_geometry)
    apply_overrides(opt, overrides or {})
    exp = tmp_path / 'exp'
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, auto_resume=False,
               num_gpu=0 if device.type == 'cpu' else 1)
    opt['path'].update(models=str(exp / 'models'), training_states=str(exp / 'states'),
                       visualization=str(exp / 'vis'), experiments_root=str(exp), log=str(exp))
    for sub in ('models', 'states'):
        os.makedirs(exp / sub, exist_ok=True)
    for ds in opt['datasets'].values():
        ds['scale'] = opt['scale']
        ds['phase'] = 'train' if ds['type'] in ('LRTIRecurrentDataset', 'LRTILongClipDataset') else 'val'
    with tiny_flow_archs(tiny_flow):
        model = LRTIModel(opt)
    if dtype != torch.float32:
        for net in (model.net_g, getattr(model, 'net_g_ema', None)):
            if net is not None:
                net.to(dtype)  # in place: the optimiser keeps the same parameters
    return model
