"""The training keys of the LRTI strategy, read once from the options into frozen dataclasses.

``train: lrti:`` switches the strategy on (method.md, section 2); without the block the model trains
plain clips. The window geometry (L, T, N) is not repeated there: it is the train dataset's
(``LRTILongClipDataset``: ``long_frames``, ``clip_frames``, ``num_clips``), read from its options so
the two can never disagree. A full block with its defaults::

    train:
      use_amp: false          # mixed precision (see parse_amp); applies with or without lrti
      amp_dtype: auto         # auto (bfloat16 where supported, else float16) | float16 (GradScaler) | bfloat16
      lrti:
        mode: batch           # batch | sequential
        init: cached          # cached | zeros
        long_pass_ema: false
        log_cache: true
        max_state_rms: 100.0  # the state guard (null: off)
        guard_action: zeros   # zeros | skip

An empty block (``lrti: {}``) switches the strategy on with every default.
"""
from dataclasses import dataclass, fields
from typing import Mapping, Optional

import torch

from lrti_plugin.utils.validate import check_known_keys, expect_bool, expect_choice, expect_int, expect_number

_MODES = ('batch', 'sequential')
_INITS = ('cached', 'zeros')
_GUARD_ACTIONS = ('zeros', 'skip')
_GEOMETRY = ('long_frames', 'clip_frames', 'num_clips')
_AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@dataclass(frozen=True)
class LRTIOptions:
    """The ``train.lrti`` block, plus the window geometry of the train dataset.

    Attributes:
        mode (str): ``batch``: the N windows of one long pass form one batch (N*B, T, ...) of one
            optimiser step. ``sequential``: they are spent on N consecutive optimiser steps (B, T, ...)
            within one BasicSR iteration, each reusing the cached states of the same long pass
            (activation memory of one window; the later windows' states are slightly stale; the
            learning rate is the iteration's for all N steps; EMA is updated after every step).
            Default: ``batch``.
        init (str): ``cached``: each window starts from the boundary states of the long pass (LRTI).
            ``zeros``: no long pass; each window starts from zero states like plain short-clip
            training, on exactly the same windows (the strategy's ablation). Default: ``cached``.
        long_pass_ema (bool): Run the long pass with the EMA weights (``train.ema_decay`` > 0
            required) instead of the current ones. Default: False.
        log_cache (bool): Add the cache sizes and the long pass's share of the iteration time to the
            log (synchronises the device around the long pass for honest timing). Default: True.
        max_state_rms (float | None): The state guard. A window whose cached boundary states have a
            root-mean-square above this (any branch), or a non-finite value, is not started from them.
            A network whose recurrence amplifies its state a little per frame is harmless on the short
            windows it is trained on, but over a long pass the states grow geometrically (seen: 2e8
            after 32 frames), and windows started from them have losses of 1e2..1e11 that wreck the
            weights in a few steps (docs/results.md). Healthy states have an RMS of about 0.05-0.2
            (official BasicVSR weights, randomly initialised tiny nets), so the default of 100 never
            fires on them. None switches the guard off. Default: 100.0.
        guard_action (str): What a guarded window does. ``zeros``: it starts from zero states, like
            ``init: zeros`` (the step still happens). ``skip``: the whole iteration's optimiser step is
            skipped. Counted in the log as ``guard_windows`` (windows flagged in this iteration) and
            ``guard_total`` (since the start of this process). Default: ``zeros``.
        long_frames (int): L, frames of the long clip (train dataset's ``long_frames``).
        clip_frames (int): T, frames of each window (train dataset's ``clip_frames``).
        num_clips (int): N, windows per long clip (train dataset's ``num_clips``).
    """

    long_frames: int
    clip_frames: int
    num_clips: int
    mode: str = 'batch'
    init: str = 'cached'
    long_pass_ema: bool = False
    log_cache: bool = True
    max_state_rms: Optional[float] = 100.0
    guard_action: str = 'zeros'

    def __post_init__(self):
        expect_int('datasets.train.long_frames', self.long_frames, minimum=1)
        expect_int('datasets.train.clip_frames', self.clip_frames, minimum=1)
        expect_int('datasets.train.num_clips', self.num_clips, minimum=1)
        for key, choices in (('mode', _MODES), ('init', _INITS), ('guard_action', _GUARD_ACTIONS)):
            expect_choice(f'train.lrti.{key}', getattr(self, key), choices)
        for key in ('long_pass_ema', 'log_cache'):
            expect_bool(f'train.lrti.{key}', getattr(self, key))
        if self.max_state_rms is not None:
            expect_number('train.lrti.max_state_rms', self.max_state_rms, 0, low_open=True)
        if self.clip_frames > self.long_frames:
            raise ValueError(f'datasets.train.clip_frames ({self.clip_frames}) must not exceed '
                             f'datasets.train.long_frames ({self.long_frames})')

    @classmethod
    def from_options(cls, opt: Mapping) -> Optional['LRTIOptions']:
        """Parse ``opt['train']['lrti']`` and the train dataset's geometry; None when the block is absent.

        Args:
            opt (dict): The whole BasicSR option dict (never mutated).

        Raises:
            ValueError: An unknown key (named), a wrong type (key and type named), a bad value, or a
                train dataset without ``long_frames``/``clip_frames``/``num_clips``.
        """
        train = opt.get('train') or {}
        if 'lrti' not in train:
            return None
        block = train['lrti'] if train['lrti'] is not None else {}
        if not isinstance(block, Mapping):
            raise ValueError(f'train.lrti: expected a mapping of options, got {type(block).__name__}')
        allowed = [f.name for f in fields(cls) if f.name not in _GEOMETRY]
        for key in block:
            if key in _GEOMETRY:
                raise ValueError(f'train.lrti.{key}: unknown key (the window geometry is set in datasets.train)')
        check_known_keys('train.lrti', block, allowed)
        dataset = (opt.get('datasets') or {}).get('train') or {}
        missing = [k for k in _GEOMETRY if k not in dataset]
        if missing:
            raise ValueError(f'train.lrti needs a long-clip train dataset (e.g. LRTILongClipDataset), but '
                             f'datasets.train (type {dataset.get("type")!r}) has no {", ".join(missing)}')
        return cls(**{k: dataset[k] for k in _GEOMETRY}, **block)


def parse_amp(train_opt: Mapping, device: Optional[torch.device] = None) -> Optional[torch.dtype]:
    """``train.use_amp`` (default False) and ``train.amp_dtype`` (default ``auto``): mixed precision.

    They live in ``train`` rather than in ``train.lrti`` because they apply to plain training too (an
    ablation must not change the precision). With ``use_amp`` every training forward pass (the long
    pass included) runs under ``torch.amp.autocast`` on the model's device, in ``amp_dtype``, on a CPU
    as on a GPU. ``float16`` also gets a ``torch.amp.GradScaler`` (its state is saved in the training
    state); ``bfloat16`` has float32's range and needs none. ``auto`` is ``bfloat16`` where the device
    supports it (CPUs, CUDA GPUs from Ampere on) and ``float16`` elsewhere (older GPUs).

    Args:
        train_opt: The ``train`` block.
        device: The model's device (resolves ``auto``; default CPU).

    Returns:
        torch.dtype | None: the autocast dtype, or None when mixed precision is off.

    Raises:
        ValueError: ``use_amp`` is not a bool, or ``amp_dtype`` is not ``auto``/``float16``/``bfloat16``.
    """
    value = train_opt.get('use_amp', False)
    if not isinstance(value, bool):
        raise ValueError(f'train.use_amp: expected true/false, got {value!r}')
    name = train_opt.get('amp_dtype', 'auto')
    if name != 'auto' and name not in _AMP_DTYPES:
        raise ValueError(f'train.amp_dtype: expected one of auto | {" | ".join(_AMP_DTYPES)}, got {name!r}')
    if not value:
        return None
    if name == 'auto':
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    return _AMP_DTYPES[name]


def bf16_supported(device: Optional[torch.device] = None) -> bool:
    """Whether autocast in bfloat16 is native on ``device`` (CPU: yes; CUDA: compute capability >= 8.0)."""
    device = torch.device(device if device is not None else 'cpu')
    check = getattr(getattr(torch, device.type, None), 'is_bf16_supported', None)  # torch.cuda's, for a GPU
    return True if device.type == 'cpu' or check is None else bool(check(including_emulation=False))
