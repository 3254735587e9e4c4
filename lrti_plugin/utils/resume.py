"""Resume a BasicSR training run on the very data stream it was interrupted in.

BasicSR's ``train_pipeline`` restores the weights, optimisers and schedulers of a resumed run, then
restarts the interrupted epoch's data from its first batch: a run saved at iteration ``i``, ``k``
batches into its epoch, trains its next ``k`` iterations on batches it has already seen, and every crop
after them differs from the uninterrupted run's. With epochs longer than a run (a campaign of 200
iterations over 703 batches per epoch), a resumed run repeats data and never sees the rest.

Here the interrupted epoch continues where it stopped, and the random streams come back as they were:

* every epoch starts from the random-generator states it had in the uninterrupted run (``data_rng``,
  saved with each training state): the shuffling, the data-loader workers' seeds and, without
  workers, the crops drawn in the main process;
* the ``k`` batches the epoch already delivered are drawn again and dropped, so workers seeded per
  epoch (BasicSR's ``worker_init_fn``) reach the state they had at the checkpoint;
* then the generator states of the checkpoint itself (``rng``) are restored.

A run resumed this way trains on the same batches as the uninterrupted run, bit for bit on the same
machine and thread count (``tests/test_exact_resume.py``). ``train.exact_resume: false`` keeps BasicSR's
behaviour (no batches drawn twice on resume; the epoch restarts).

The pieces: :func:`note_resume` (called by the runner's ``load_resume_state``), the prefetcher classes
that :func:`lrti_plugin._compat.patch_basicsr_runners` puts in BasicSR's runner, and
:func:`rng_states_for_checkpoint` (written by ``LRTIModel.save_training_state``).
"""
import random
import time

import numpy as np
import torch
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.utils import get_root_logger

# The one resume this process is about to perform (set by the runner's load_resume_state, taken by the first
# epoch's reset), and the generator states of the epoch in progress (for the next training state).
_pending = None
_epoch_rng = None


def capture_rng() -> dict:
    """The states of Python's, NumPy's and torch's generators (CUDA's too, where CUDA is in use)."""
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['torch_accel'] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict) -> None:
    """Put back what :func:`capture_rng` returned (the accelerator's only where this machine has as many)."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    accel = states.get('torch_accel')
    if accel is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(accel):
        torch.cuda.set_rng_state_all(accel)


def note_resume(opt: dict, resume_state: dict) -> None:
    """Remember that the next training epoch resumes ``resume_state`` (``None``: a fresh run)."""
    global _pending, _epoch_rng
    _epoch_rng = None
    _pending = None
    if resume_state is None or not (opt.get('train') or {}).get('exact_resume', True):
        return
    workers = (opt.get('datasets', {}).get('train') or {}).get('persistent_workers', False)
    # The states are rank 0's (only rank 0 writes training states): with several processes each rank keeps
    # its own seeded generators, and only the batches are skipped.
    single = opt.get('world_size', 1) == 1
    _pending = {'epoch': int(resume_state['epoch']), 'iter': int(resume_state['iter']),
                'data_rng': resume_state.get('data_rng') if single else None,
                'rng': resume_state.get('rng') if single else None,
                'persistent_workers': bool(workers), 'single': single}


def rng_states_for_checkpoint() -> dict:
    """Keys for a training state: the generators now (``rng``) and at the start of this epoch (``data_rng``)."""
    extra = {'rng': capture_rng()}
    if _epoch_rng is not None:
        extra['data_rng'] = _epoch_rng
    return extra


class _ExactResume:
    """Mixin over BasicSR's prefetchers: ``reset`` (called once per epoch) resumes the noted epoch exactly."""

    def reset(self):
        global _pending, _epoch_rng
        pending, _pending = _pending, None
        if pending and pending['data_rng'] is not None:
            restore_rng(pending['data_rng'])
        _epoch_rng = capture_rng()
        super().reset()
        if pending:
            self._skip_consumed(pending)

    def _skip_consumed(self, pending: dict) -> None:
        logger = get_root_logger()
        per_epoch = len(self.ori_loader)
        consumed = pending['iter'] - pending['epoch'] * per_epoch
        if not 0 <= consumed <= per_epoch:
            logger.warning(f'Resume: iteration {pending["iter"]} is not in epoch {pending["epoch"]} of '
                           f'{per_epoch} batches (a state from a run resumed by plain BasicSR, or other '
                           f'batch/data options): the epoch restarts from its first batch.')
            return
        notes = []
        if not pending['single']:
            notes.append('several processes: each keeps its own generators, crops drawn outside workers differ')
        elif pending['data_rng'] is None:
            notes.append('the state has no data_rng (not written by LRTIModel): crops may differ')
        if pending['persistent_workers'] and pending['epoch'] > 0:
            notes.append('persistent_workers: the workers do not restart at an epoch, so their crops differ')
        logger.info(f'Resume: drawing again the {consumed} batch(es) epoch {pending["epoch"]} already trained on, '
                    f'to continue its data stream where it stopped' + ''.join(f'; {n}' for n in notes) + '.')
        t0 = time.time()
        for _ in range(consumed):
            if self.next() is None:
                break
        if pending['rng'] is not None:
            restore_rng(pending['rng'])
        if consumed:
            logger.info(f'Resume: {consumed} batch(es) skipped in {time.time() - t0:.1f} s.')


class ExactResumeCPUPrefetcher(_ExactResume, CPUPrefetcher):
    """BasicSR's ``CPUPrefetcher`` (and plain data loader) that resumes an interrupted epoch exactly."""


class ExactResumeCUDAPrefetcher(_ExactResume, CUDAPrefetcher):
    """BasicSR's ``CUDAPrefetcher`` that resumes an interrupted epoch exactly."""
