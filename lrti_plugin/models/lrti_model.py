"""The LRTI model: BasicSR's ``VideoRecurrentModel`` made device-agnostic, EMA-aware and safe to resume.

Every BasicSR hook keeps its signature, so BasicSR's own ``train_pipeline``/``test_pipeline`` drive
it unchanged. The BasicSR defects answered here (one override each):

* ``BaseModel.model_to_device``: DDP is built with ``device_ids=[torch.cuda.current_device()]``,
  which fails on a CPU (gloo). Ours passes ``device_ids=None`` there.
* ``VideoRecurrentModel.dist_validation`` and ``test``: see :mod:`.video_validation` (a mixin).
* ``VideoRecurrentModel.optimize_parameters``: ``fix_flow`` only freezes the flow network when
  training starts at iteration 1, so a resumed run silently trains it.
* ``setup_optimizers``/``get_optimizer``: pop ``type`` from the shared option dict and only know Adam.
* ``save_network``/``save_training_state``: write in place, so a run killed mid-save leaves a
  truncated checkpoint that ``--auto_resume`` then picks. Ours write a temporary file and rename it;
  only rank 0 writes.
* ``save_training_state`` also writes the random generators' states, so that the runner resumes the
  interrupted epoch's data stream exactly (:mod:`lrti_plugin.utils.resume`).
* ``load_network``: a wrong or truncated checkpoint gives hundreds of lines that never name the file;
  ours give one (:mod:`lrti_plugin.utils.checkpoint`).

The LRTI strategy (``train.lrti``, :mod:`.truncated_bptt`) and mixed precision (``train.use_amp``)
are added through ``feed_data``/``optimize_parameters`` and the training-state hooks.
"""
import time
from collections import OrderedDict
from copy import deepcopy
from os import path as osp

import torch
from basicsr.models.video_recurrent_model import VideoRecurrentModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lrti_plugin.models import truncated_bptt as tbptt
from lrti_plugin.models.lrti_options import LRTIOptions, parse_amp
from lrti_plugin.models.video_validation import WholeClipValidation
from lrti_plugin.utils.checkpoint import atomic_torch_save, check_state_dict, read_checkpoint, select_params
from lrti_plugin.utils.option_check import check_options
from lrti_plugin.utils.resume import rng_states_for_checkpoint
from lrti_plugin.utils.validate import expect_bool, expect_number

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW}
# Parameter-name substrings frozen by ``train.fix_flow`` (BasicSR's convention: flow net and EDVR extractor).
_FLOW_KEYS = ('spynet', 'edvr')
_MIB = float(2**20)


def _parse_step_guards(train_opt) -> tuple:
    """``train.grad_clip_norm`` (positive number or null) and ``train.skip_nonfinite`` (bool)."""
    clip = train_opt.get('grad_clip_norm')
    if clip is not None:
        expect_number('train.grad_clip_norm', clip, 0, low_open=True)
    skip = expect_bool('train.skip_nonfinite', train_opt.get('skip_nonfinite', True))
    return (float(clip) if clip is not None else None), skip


@MODEL_REGISTRY.register()
class LRTIModel(WholeClipValidation, VideoRecurrentModel):
    """Recurrent video SR model for LRTI-VSR: plain short-clip training, or the LRTI strategy.

    Options read (BasicSR's usual keys, plus ``train.lrti`` and ``train.use_amp``):
        network_g: the arch (any recurrent arch mapping (B, T, 3, H, W) to (B, T, 3, sH, sW); with
            ``train.lrti`` (``init: cached``) one that speaks the propagation protocol).
        train.lrti: switches the LRTI strategy on; keys in :class:`LRTIOptions` (``mode``, ``init``,
            ``long_pass_ema``, ``log_cache``); the window geometry comes from ``datasets.train``
            (``long_frames``, ``clip_frames``, ``num_clips``). Absent: plain clips, as BasicSR trains.
        train.use_amp, train.amp_dtype: mixed precision on any device (autocast in ``float16`` with a
            GradScaler saved in the training state, or ``bfloat16``), see
            :func:`~lrti_plugin.models.lrti_options.parse_amp`. Default: false, ``auto`` (bfloat16 where
            the device has it).
        train.optim_g.type: ``Adam`` or ``AdamW``.
        train.ema_decay: > 0 keeps an EMA copy, used for validation and saved as ``params_ema``.
        train.fix_flow: freeze parameters whose name contains ``spynet``/``edvr`` while
            ``current_iter < fix_flow`` (also after a resume).
        train.flow_lr_mul: learning-rate multiplier of the flow network (0 keeps it frozen).
        train.grad_clip_norm: clip the gradients' global L2 norm to this before each step (null: no
            clipping). Default: null.
        train.skip_nonfinite: skip the optimiser step (and count it in the log as ``skipped_steps``)
            when the gradient norm (after DDP's all-reduce, so every rank decides alike) is not finite,
            e.g. after a non-finite loss, instead of writing nan/inf into the weights. A float16
            GradScaler skips such steps itself; they are counted too. Default: true.
        val.flip_seq, val.metrics, val.save_img: as in BasicSR; images are saved during training
            too, as ``visualization/<dataset>/<clip>/<frame>_<iter>.png``.
        val.stream_chunk: run each test/validation clip with exact streaming in chunks of this many
            frames (:mod:`lrti_plugin.archs.streaming`): the same output as one whole pass, with the branch
            features of one chunk on the device instead of every frame's (REDS4-sized clips of the
            transformer). null: one whole pass. Default: null.
        find_unused_parameters: passed to DDP (set automatically when ``fix_flow`` is used).

    The LRTI state guard (``train.lrti.max_state_rms``, ``guard_action``) is described in
    :class:`LRTIOptions`; log keys ``guard_windows`` and ``guard_total``.

    Training batches (``feed_data``): plain ``lq`` (B, T, 3, H, W), ``gt`` (B, T, 3, sH, sW); with
    ``train.lrti`` the long-clip batch ``lq`` (B, L, 3, H, W), ``gt`` (B, N, T, 3, sH, sW), ``starts``
    (B, N). Log keys added with ``train.lrti``: ``cache_long_mib`` (long-pass PropagationStates),
    ``cache_windows_mib`` (the N*B windows' BoundaryStates), ``long_pass_share`` (long-pass time /
    ``optimize_parameters`` time) and ``state_rms`` (the largest RMS of the windows' cached states, before
    the guard) when ``log_cache``.
    """

    def __init__(self, opt):
        # Checked before anything is built, so a bad key or block fails at once.
        check_options(opt)
        self.lrti = LRTIOptions.from_options(opt) if opt.get('is_train') else None
        num_gpu = opt.get('num_gpu', 0)
        if self.lrti is not None and not opt.get('dist') and isinstance(num_gpu, int) and num_gpu > 1:
            # DataParallel would scatter the windows but replicate their BoundaryStates whole.
            raise ValueError(f'train.lrti does not run under DataParallel (num_gpu: {num_gpu} without a launcher): '
                             f'use DDP, e.g. torchrun --nproc_per_node={num_gpu} -m lrti_plugin.train -opt FILE '
                             '--launcher pytorch (or set num_gpu: 1)')
        if opt.get('dist') and opt.get('is_train') and opt['train'].get('fix_flow'):
            # Frozen parameters receive no gradient: DDP must be told, or its reducer raises.
            opt['find_unused_parameters'] = True
        super().__init__(opt)

    # ------------------------------------------------------------------ set-up
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = None if self.device.type == 'cpu' else [torch.cuda.current_device()]
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = torch.nn.DataParallel(net)
        return net

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type not in OPTIMIZERS:
            raise ValueError(f'train.optim_g.type: unknown optimizer {optim_type!r}; choose from {sorted(OPTIMIZERS)}')
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def setup_optimizers(self):
        train_opt = self.opt['train']
        optim_opt = deepcopy(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        flow_lr_mul = train_opt.get('flow_lr_mul', 1)
        get_root_logger().info(f'Learning rate multiplier of the flow network: {flow_lr_mul}.')
        if flow_lr_mul == 1:
            params = [p for p in self.net_g.parameters()]
        else:
            named = list(self.net_g.named_parameters())
            params = [
                {'params': [p for n, p in named if 'spynet' not in n], 'lr': optim_opt['lr']},
                {'params': [p for n, p in named if 'spynet' in n], 'lr': optim_opt['lr'] * flow_lr_mul},
            ]
        lr = optim_opt.pop('lr')
        self.optimizer_g = self.get_optimizer(optim_type, params, lr, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def setup_schedulers(self):
        """BasicSR's schedulers, built from a copy of ``train.scheduler`` (BasicSR pops ``type``).

        Raises ValueError if a cosine schedule's ``periods`` end before ``train.total_iter``: BasicSR's
        scheduler would fail there with an unrelated TypeError, hours into the run.
        """
        train_opt = self.opt['train']
        sched = deepcopy(train_opt['scheduler'])
        periods = sched.get('periods')
        if periods is not None and sum(periods) < int(train_opt['total_iter']):
            raise ValueError(f'train.scheduler.periods: {list(periods)} sum to {sum(periods)}, fewer than '
                             f"train.total_iter = {train_opt['total_iter']}")
        original = train_opt['scheduler']
        train_opt['scheduler'] = sched
        try:
            super().setup_schedulers()  # pops 'type' from the copy only
        finally:
            train_opt['scheduler'] = original

    # ---------------------------------------------------------------- training
    def _apply_fix_flow(self, current_iter):
        """Freeze the flow network while ``current_iter < fix_flow`` (idempotent, resume-safe)."""
        if not self.fix_flow_iter:
            return
        frozen = current_iter < self.fix_flow_iter
        changed = False
        for name, param in self.net_g.named_parameters():
            if any(k in name for k in _FLOW_KEYS) and param.requires_grad == frozen:
                param.requires_grad_(not frozen)
                changed = True
        if changed:
            state = f'frozen until iter {self.fix_flow_iter}' if frozen else 'trained from now on'
            get_root_logger().info(f'Flow network {state} (iter {current_iter}).')

    def init_training_settings(self):
        super().init_training_settings()
        logger = get_root_logger()
        self.amp_dtype = parse_amp(self.opt['train'], self.device)
        if self.amp_dtype is not None:
            logger.info(f'Mixed precision: autocast to {self.amp_dtype} on {self.device.type}.')
            if self.amp_dtype == torch.float16 and self.device.type == 'cpu':
                logger.warning('train.amp_dtype float16 on a CPU is slow (few CPUs have float16 kernels); '
                               'bfloat16 is the fast choice there.')
        # Only float16 needs loss scaling; a disabled scaler passes losses and steps through unchanged.
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.grad_clip_norm, self.skip_nonfinite = _parse_step_guards(self.opt['train'])
        self.skipped_steps = 0
        self.nonfinite_losses = 0
        self.guard_total = 0
        if self.lrti is None:
            return
        if self.lrti.init == 'cached':
            tbptt.check_protocol(self.net_g)
        if self.lrti.long_pass_ema and not self.ema_decay > 0:
            raise ValueError('train.lrti.long_pass_ema needs an EMA network: set train.ema_decay > 0')
        logger.info(f'LRTI strategy: {self.lrti}.')

    def feed_data(self, data):
        """Take a batch: plain clips, or (training with ``train.lrti``) a long-clip batch.

        Args:
            data (dict): ``lq`` (B, T, 3, H, W) [and ``gt`` (B, T, 3, sH, sW)]; or the long-clip batch
                ``lq`` (B, L, 3, H, W), ``gt`` (B, N, T, 3, sH, sW), ``starts`` (B, N) integers.
        """
        super().feed_data(data)
        self.starts = None
        if 'starts' not in data:
            return
        if self.lrti is None:
            raise ValueError('a long-clip batch (with starts) needs train.lrti; for plain training on the same '
                             'windows set train.lrti.init: zeros')
        if 'gt' not in data:
            raise ValueError('a long-clip batch needs gt (B, N, T, 3, sH, sW) next to starts')
        self.starts = torch.as_tensor(data['starts']).cpu()  # (B, N): python ints are taken from it
        tbptt.check_long_clip_batch(self.lq, self.gt, self.starts, self.lrti.clip_frames, self.lrti.num_clips)

    def optimize_parameters(self, current_iter):
        self._apply_fix_flow(current_iter)
        if self.lrti is None:
            self.log_dict = self.reduce_loss_dict(self._train_step(self.lq, self.gt))
            self._log_step_counts()
            return
        if self.starts is None:
            raise ValueError('train.lrti is set but the training batch has no starts: use a long-clip train '
                             'dataset (LRTILongClipDataset)')
        self._optimize_lrti()

    def _optimize_lrti(self):
        """Long pass (no grad) -> cached window states -> window pass(es) with gradient -> step(s)."""
        timed = self.lrti.log_cache
        t_start = self._clock(timed)
        states = None
        if self.lrti.init == 'cached':
            net = self.net_g_ema if self.lrti.long_pass_ema else self.net_g
            with self._autocast():
                states = tbptt.long_pass(net, self.lq)
        t_long = self._clock(timed) - t_start
        clips, gts, init = tbptt.window_batch(self.lq, self.gt, self.starts, states)
        long_bytes = states.nbytes if states is not None else 0
        del states  # only the windows' borders stay alive during the window pass
        flagged = 0
        rms_max = float(tbptt.state_rms(init).max()) if init is not None and timed else None
        if init is not None and self.lrti.max_state_rms is not None:
            init, flags = tbptt.guard_states(init, self.lrti.max_state_rms)
            flagged = int(flags.sum())
            self.guard_total += flagged
            if flagged:
                get_root_logger().warning(f'LRTI state guard: {flagged} of {flags.numel()} windows have boundary '
                                          f'states above max_state_rms={self.lrti.max_state_rms} or non-finite: '
                                          f'{self.lrti.guard_action} (total {self.guard_total}).')
        if self.lrti.guard_action == 'skip' and self.opt.get('dist') and dist.is_initialized():
            # Every rank must skip together (a rank that skips backward would stall the others' all-reduce).
            count = torch.tensor(float(flagged), device=self.device)
            dist.all_reduce(count)
            flagged = int(count.item())
        if flagged and self.lrti.guard_action == 'skip':
            self.skipped_steps += 1
            self.log_dict = OrderedDict(guard_windows=float(flagged), guard_total=float(self.guard_total),
                                        skipped_steps=float(self.skipped_steps))
            return
        if self.lrti.mode == 'batch':
            loss_dicts = [self._train_step(clips, gts, init)]
        else:
            loss_dicts, outputs = [], []
            for window in tbptt.split_windows(clips, gts, init, self.lrti.num_clips):
                loss_dicts.append(self._train_step(*window))
                outputs.append(self.output)
            self.output = torch.cat(outputs)  # (N*B, T, 3, sH, sW)
        loss_dict = {k: torch.stack([d[k] for d in loss_dicts]).mean() for k in loss_dicts[0]}
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self._log_step_counts()
        if timed:
            t_iter = self._clock(timed) - t_start
            self.log_dict['cache_long_mib'] = long_bytes / _MIB
            self.log_dict['cache_windows_mib'] = (init.nbytes if init is not None else 0) / _MIB
            self.log_dict['long_pass_share'] = t_long / t_iter if t_iter > 0 else 0.0
            if rms_max is not None:
                self.log_dict['state_rms'] = rms_max
        if self.lrti.max_state_rms is not None:
            self.log_dict['guard_windows'] = float(flagged)
            self.log_dict['guard_total'] = float(self.guard_total)

    def _train_step(self, lqs, gts, init=None):
        """One optimiser step on clips ``lqs`` (B', T, 3, H, W) against ``gts`` (B', T, 3, sH, sW).

        ``init`` (BoundaryStates of batch B', or None for zero states) goes through the DDP wrapper
        with the clip. Sets ``self.output`` (B', T, 3, sH, sW, detached); returns the loss tensors.
        """
        self.optimizer_g.zero_grad()
        with self._autocast():
            output = self.net_g(lqs) if init is None else self.net_g(lqs, init_states=init)
        loss_dict = self._losses(output.float(), gts)
        self.output = output.detach()
        loss = sum(loss_dict.values())
        if not bool(torch.isfinite(loss.detach())):
            self.nonfinite_losses += 1
        scaled = self.grad_scaler.is_enabled()  # float16: the scaler skips non-finite steps and backs off
        # Backward always runs (under DDP every rank must reach the gradient all-reduce); a non-finite loss gives a
        # non-finite gradient norm, the same on every rank after the all-reduce, so all ranks skip together.
        self.grad_scaler.scale(loss).backward()
        if self.grad_clip_norm is not None or (self.skip_nonfinite and not scaled):
            self.grad_scaler.unscale_(self.optimizer_g)
            params = [p for group in self.optimizer_g.param_groups for p in group['params'] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm or float('inf'))
            if self.skip_nonfinite and not scaled and not bool(torch.isfinite(norm)):
                self._skip_step('gradient norm', norm)
                return loss_dict
        scale = self.grad_scaler.get_scale() if scaled else None
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()
        if scaled and self.grad_scaler.get_scale() < scale:
            self.skipped_steps += 1  # the scaler found inf/nan gradients and skipped the step
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        return loss_dict

    def _log_step_counts(self):
        """Add the run's counts of skipped optimiser steps and non-finite losses (this process) to the log."""
        self.log_dict['skipped_steps'] = float(self.skipped_steps)
        self.log_dict['nonfinite_losses'] = float(self.nonfinite_losses)

    def _skip_step(self, what, value):
        """Drop this step's gradients and count it (``train.skip_nonfinite``)."""
        self.optimizer_g.zero_grad()
        self.skipped_steps += 1
        get_root_logger().warning(f'Non-finite {what} ({float(value.detach())}): optimiser step skipped '
                                  f'({self.skipped_steps} so far).')

    def _losses(self, output, gt):
        """BasicSR's pixel/perceptual losses of (B, T, 3, sH, sW) frames (perceptual per frame)."""
        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output.flatten(0, 1), gt.flatten(0, 1))  # (B*T, 3, sH, sW)
            if l_percep is not None:
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                loss_dict['l_style'] = l_style
        return loss_dict

    def _autocast(self):
        return torch.amp.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _clock(self, timed: bool) -> float:
        """``time.perf_counter()``, after waiting for the device's queued work when ``timed``."""
        if timed and self.device.type != 'cpu':
            torch.accelerator.synchronize(self.device)
        return time.perf_counter()

    # ---------------------------------------------------------------- loading and saving
    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's ``load_network`` (same choice of ``params``/``params_ema``, ``module.`` removed) with one-line
        errors that name the file: unreadable or truncated, or (strict) missing/unexpected keys or shapes."""
        logger = get_root_logger()
        net = self.get_bare_model(net)
        checkpoint = read_checkpoint(load_path, 'path.pretrain_network_g')
        if param_key is not None and param_key not in checkpoint and 'params' in checkpoint:
            logger.info(f'Loading: {param_key} does not exist, use params.')
        state = dict(select_params(checkpoint, load_path, param_key))
        logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
        if strict:
            check_state_dict(net, state, load_path)
        else:
            self._print_different_keys_loading(net, state, strict)  # also drops tensors of another shape
        net.load_state_dict(state, strict=strict)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
        label = 'latest' if current_iter == -1 else current_iter
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
        }
        if hasattr(self, 'grad_scaler'):
            state['grad_scaler'] = self.grad_scaler.state_dict()
        state.update(rng_states_for_checkpoint())  # the resumed run continues the same data stream
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        """Reload optimizers and schedulers (BasicSR) and the GradScaler of float16 mixed precision."""
        super().resume_training(resume_state)
        scaler_state = resume_state.get('grad_scaler') or {}
        if self.grad_scaler.is_enabled() and scaler_state:
            self.grad_scaler.load_state_dict(scaler_state)
        elif self.grad_scaler.is_enabled():
            get_root_logger().warning('Resumed state has no GradScaler state: the loss scale starts afresh.')
        elif scaler_state:
            get_root_logger().warning('Resumed state has a GradScaler state but float16 mixed precision is off: '
                                      'ignored.')
