"""Read checkpoints and load them into networks with one-line errors that name the file.

torch's own errors for a truncated file never name it, and ``load_state_dict`` lists every missing and
unexpected key (hundreds of lines for a checkpoint of another arch). Here each failure is one
ValueError: ``checkpoint PATH: unreadable (...)`` or ``checkpoint PATH: 12 missing / 40 unexpected keys
(first 3 missing: ...; first 3 unexpected: ...); wrong arch or width?``.
"""
import os
import tempfile
from typing import Mapping, Optional

import torch
from torch import nn


def read_checkpoint(path: str, key: str = 'checkpoint', weights_only: bool = True):
    """``torch.load`` onto the CPU.

    Args:
        path: The file.
        key: The option that named it, used in the error (e.g. ``path.pretrain_network_g``).
        weights_only: torch's safe unpickler (tensors and plain containers only); False for training states.

    Raises:
        FileNotFoundError: ``<key>: no checkpoint at PATH``.
        ValueError: ``checkpoint PATH: unreadable (...)``: truncated, corrupt or not a torch file.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise FileNotFoundError(f'{key}: no checkpoint at {path!r}')
    try:
        return torch.load(path, map_location='cpu', weights_only=weights_only)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'checkpoint {path}: unreadable ({type(err).__name__}: {reason[:200]}); truncated, '
                         'corrupt or not a torch checkpoint?') from None


def select_params(checkpoint, path: str, param_key: Optional[str] = 'params') -> Mapping[str, torch.Tensor]:
    """The state dict stored under ``param_key`` (BasicSR's rule: ``params`` when ``param_key`` is absent).

    ``param_key=None`` takes the checkpoint itself as the state dict. A ``module.`` prefix (DataParallel, DDP) is
    removed from every name.
    """
    state = checkpoint
    if param_key is not None:
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f'checkpoint {path}: expected a dict of parameters, got {type(checkpoint).__name__}')
        if param_key not in checkpoint and 'params' in checkpoint:
            param_key = 'params'
        if param_key not in checkpoint:
            raise ValueError(f'checkpoint {path}: no {param_key!r} entry (it has {sorted(map(str, checkpoint))[:5]})')
        state = checkpoint[param_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'checkpoint {path}: entry {param_key!r} is not a state dict of tensors')
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}


def check_state_dict(net: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Raise one line if ``state`` cannot load strictly into ``net`` (names and shapes)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f'{len(missing)} missing / {len(unexpected)} unexpected keys (']
        details = []
        if missing:
            details.append(f'first 3 missing: {", ".join(missing[:3])}')
        if unexpected:
            details.append(f'first 3 unexpected: {", ".join(unexpected[:3])}')
        raise ValueError(f'checkpoint {path}: {parts[0]}{"; ".join(details)}); wrong arch or width?')
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if shapes:
        first = ', '.join(f'{k} {a} vs {b}' for k, a, b in shapes[:3])
        raise ValueError(f'checkpoint {path}: {len(shapes)} tensors of another shape (first 3, checkpoint vs '
                         f'network: {first}); wrong arch or width?')


def load_weights(net: nn.Module, path: str, param_key: Optional[str] = 'params', strict: bool = True,
                 key: str = 'checkpoint') -> Mapping[str, torch.Tensor]:
    """Read ``path`` and load its ``param_key`` state into ``net``; strict loading fails in one line.

    Returns:
        The state dict that was loaded.
    """
    state = select_params(read_checkpoint(path, key), path, param_key)
    if strict:
        check_state_dict(net, state, path)
    net.load_state_dict(state, strict=strict)
    return state


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a truncated ``path``."""
    folder = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
