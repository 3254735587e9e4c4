"""A resumed run continues the data stream of the interrupted one (lrti_plugin.utils.resume).

BasicSR alone restarts the interrupted epoch: its resumed run trains on batches it has already seen, and
ends with other weights. The unit cases drive BasicSR's data loader and sampler through the prefetcher
as BasicSR's runner does; the end-to-end case trains through the real runner and compares weights.
"""
import random
import shutil
from pathlib import Path

import pytest
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from conftest import run_module, tiny_options

from lrti_plugin.utils import resume
from lrti_plugin.utils.options import dump_options


class _RandomCrops(torch.utils.data.Dataset):
    """Items drawn with Python's generator, as BasicSR's crops and flips are, and with torch's (in a worker,
    torch's is seeded from the main process's generator when the epoch's iterator starts)."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {'index': index, 'crop': random.random(), 'noise': torch.rand(())}


def _prefetcher(workers: int):
    """BasicSR's train loader (its seeded worker_init_fn, 3 batches of 2 per epoch) behind our prefetcher."""
    dataset = _RandomCrops()
    sampler = EnlargedSampler(dataset, 1, 0, 1)
    loader = build_dataloader(dataset, {'phase': 'train', 'batch_size_per_gpu': 2, 'num_worker_per_gpu': workers},
                              num_gpu=0, sampler=sampler, seed=5)
    return resume.ExactResumeCPUPrefetcher(loader), sampler


def _batch(data) -> tuple:
    return tuple(data['index'].tolist()), tuple(data['crop'].tolist()), tuple(data['noise'].tolist())


def _stream(workers: int, epochs, stop=None, opt=None, state=None) -> tuple:
    """Run BasicSR's epoch loop (set_epoch, reset, next) over ``epochs``; the 'model' draws from the main
    generators between batches, as dropout would. Returns what each iteration saw and, when ``stop`` =
    (epoch, iteration), the training state a checkpoint there would hold."""
    random.seed(0)
    torch.manual_seed(0)
    resume.note_resume(opt or {}, state)
    prefetcher, sampler = _prefetcher(workers)
    seen, saved, current_iter = [], None, state['iter'] if state else 0
    for epoch in epochs:
        sampler.set_epoch(epoch)
        prefetcher.reset()
        data = prefetcher.next()
        while data is not None:
            current_iter += 1
            seen.append(_batch(data) + (random.random(), torch.rand(1).item()))
            if stop == (epoch, current_iter):
                saved = {'epoch': epoch, 'iter': current_iter, **resume.rng_states_for_checkpoint()}
            data = prefetcher.next()
    return seen, saved


@pytest.mark.parametrize('workers', [0, 1])
def test_resume_continues_the_epochs_data_and_the_generators(workers):
    """Checkpoint at iteration 4 (epoch 1, one batch in): the resumed stream is the rest of the full one, batches
    (indices and crops) and the main process's later draws alike."""
    full, state = _stream(workers, [0, 1, 2], stop=(1, 4))
    assert len(full) == 9 and len(set(full)) == 9
    resumed, _ = _stream(workers, [1, 2], state=state)
    assert resumed == full[4:]


def test_resume_without_exact_resume_restarts_the_epoch_as_basicsr_does():
    full, state = _stream(1, [0, 1, 2], stop=(1, 4))
    restarted, _ = _stream(1, [1, 2], state=state, opt={'train': {'exact_resume': False}})
    assert [b[:2] for b in restarted[:3]] == [b[:2] for b in full[3:6]]  # epoch 1 from its first batch again


def test_resume_from_a_state_outside_its_epoch_restarts_the_epoch_and_says_so(caplog):
    """A state from a run BasicSR resumed (its epoch ran longer than an epoch) cannot be placed: warn, restart."""
    full, state = _stream(1, [0, 1, 2], stop=(1, 4))
    state['iter'] = 8  # 5 batches into epoch 1 of 3 batches
    with caplog.at_level('WARNING', logger='basicsr'):
        restarted, _ = _stream(1, [1, 2], state=state)
    assert [b[:2] for b in restarted[:3]] == [b[:2] for b in full[3:6]]
    assert 'iteration 8 is not in epoch 1 of 3 batches' in caplog.text




def _train(opt: dict, cwd: Path, resume: bool = False):
    cwd.mkdir(exist_ok=True)
    yml = dump_options(opt, str(cwd / 'train.yml'))
    proc = run_module('lrti_plugin.train', ['-opt', yml] + (['--auto_resume'] if resume else []), cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = cwd / 'experiments' / opt['name']
    return exp, '\n'.join(p.read_text() for p in sorted(exp.glob('train_*.log')))


def _weights(exp: Path) -> dict:
    return torch.load(exp / 'models' / 'net_g_6.pth', map_location='cpu')['params']


def _interrupt_after(exp: Path, iteration: int) -> None:
    """What a run killed after saving ``iteration`` leaves: no later states or weights, no final weights."""
    for path in list((exp / 'training_states').glob('*.state')) + list((exp / 'models').glob('net_g_*.pth')):
        label = path.stem.split('_')[-1]
        if label == 'latest' or int(label) > iteration:
            path.unlink()


@pytest.mark.slow
def test_resumed_run_ends_with_the_uninterrupted_runs_weights(tiny_data, tmp_path):
    """The real runner: 6 iterations uninterrupted (24 items, 3 batches of 8 per epoch, states every 2); a copy
    resumed from its iteration-4 state (epoch 1, one batch in) ends with the same weights, bit for bit."""
    name = 'exact_resume'
    opt = tiny_options(tiny_data, name, {
        'datasets.train.batch_size_per_gpu': 8, 'datasets.train.num_worker_per_gpu': 1,
        'train.total_iter': 6, 'train.scheduler.periods': [6], 'val.val_freq': 100})
    full, log = _train(opt, tmp_path / 'full')
    assert 'Require iter number per epoch: 3' in log and 'Resume:' not in log

    shutil.copytree(tmp_path / 'full' / 'experiments', tmp_path / 'resumed' / 'experiments')
    resumed = tmp_path / 'resumed' / 'experiments' / name
    _interrupt_after(resumed, 4)
    _, log = _train(opt, tmp_path / 'resumed', resume=True)
    assert 'Resuming training from epoch: 1, iter: 4.' in log
    assert 'drawing again the 1 batch(es) epoch 1 already trained on' in log
    expected, got = _weights(full), _weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)

