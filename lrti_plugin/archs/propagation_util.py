"""Small helpers of the propagation engine (:mod:`lrti_plugin.archs.propagation`).

A clip run with :class:`~lrti_plugin.state.BoundaryStates` is treated as an *extended* clip: the K
LR frames before it, its T frames, the K frames after it (:func:`extend_clip`). Flows are computed over the
extended clip (:func:`pair_flows`), so the flows across the borders are those of the long pass. Slots that
do not exist in the long clip are masked per sample (:func:`select`), which reproduces the plain run's zero start.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from lrti_plugin.state import BoundaryStates

Real = Tuple[bool, ...]  # per sample: does this slot exist in the long clip


def autocast_device(t: Tensor) -> str:
    """The device type to give ``torch.autocast`` for ``t``: ``cpu`` for meta tensors (which the memory
    estimator runs the archs on; autocast has no meta device), else the tensor's own."""
    return 'cpu' if t.device.type == 'meta' else t.device.type


def run_in_float32(fn, *inputs: Tensor) -> Tensor:
    """``fn(*inputs)``, in float32 when autocast is on for the inputs' device (flows and alignment need the
    resolution: a bfloat16 flow is off by up to 0.25 px at 64 px of motion)."""
    device_type = autocast_device(inputs[0])
    if not torch.is_autocast_enabled(device_type):
        return fn(*inputs)
    with torch.autocast(device_type=device_type, enabled=False):
        return fn(*(x.float() for x in inputs))


def check_lr_size(lqs: Tensor, min_size: int, why: str) -> None:
    """Raise ValueError unless ``lqs`` is (B, T, 3, H, W) with T >= 1 and H, W >= min_size."""
    if lqs.dim() != 5 or lqs.size(2) != 3 or lqs.size(1) < 1:
        raise ValueError(f'lqs: expected shape (B, T, 3, H, W), got {tuple(lqs.shape)}')
    if lqs.size(3) < min_size or lqs.size(4) < min_size:
        raise ValueError(f'lqs: LR height and width must be >= {min_size} ({why}), got shape {tuple(lqs.shape)} '
                         f'(H={lqs.size(3)}, W={lqs.size(4)})')


def sample_rms(x: Tensor) -> Tensor:
    """The root-mean-square of each sample of ``x`` (B, ...): (B,), in at least float32 (half and bfloat16
    overflow); inf or nan where a sample is not finite."""
    return x.to(torch.promote_types(x.dtype, torch.float32)).pow(2).flatten(1).mean(1).sqrt()


def bound_rms(x: Tensor, max_rms: float) -> Tensor:
    """``x`` (B, ...) scaled down, per sample, so that its root-mean-square is at most ``max_rms``; samples
    already within the bound are returned unchanged (multiplied by exactly 1). Differentiable."""
    rms = sample_rms(x)
    rms = rms.clamp_min(torch.finfo(rms.dtype).tiny)  # (B,)
    scale = (max_rms / rms).clamp(max=1.0).to(x.dtype)
    return x * scale.view(-1, *([1] * (x.dim() - 1)))


def select(real: Real, a: Tensor, b: Tensor) -> Tensor:
    """Per sample along dim 0: ``a`` where ``real``, else ``b`` (no masking work when all agree)."""
    if all(real):
        return a
    if not any(real):
        return b
    mask = torch.tensor(real, device=a.device).view(-1, *([1] * (a.dim() - 1)))  # (B, 1, ...)
    return torch.where(mask, a, b)


def extend_clip(lqs: Tensor, init: Optional[BoundaryStates]) -> Tuple[Tensor, int, int]:
    """The clip with its outside LR frames.

    Args:
        lqs (Tensor): (B, T, 3, H, W).
        init (BoundaryStates | None): borders; a side is added only if some sample has a real frame there.

    Returns:
        tuple: (B, kb + T + ka, 3, H, W) extended clip, kb (0 or K), ka (0 or K).
    """
    if init is None:
        return lqs, 0, 0
    kb = init.order if any(init.num_before) else 0
    ka = init.order if any(init.num_after) else 0
    parts = [init.lqs_before[:, init.order - kb:], lqs, init.lqs_after[:, :ka]]
    return torch.cat(parts, dim=1), kb, ka


def pair_flows(spynet, lqs: Tensor, backward: bool) -> Tensor:
    """Flows between consecutive frames, as BasicSR computes them.

    Args:
        spynet (nn.Module): flow network, ``spynet(ref, supp)`` -> flow warping ``supp`` onto ``ref``.
        lqs (Tensor): (B, E, 3, H, W).
        backward (bool): True: flow from frame e to e+1 (warps e+1 onto e); False: from e+1 to e.

    Returns:
        Tensor: (B, E-1, 2, H, W); entry e concerns frames e and e+1.
    """
    b, e, c, h, w = lqs.shape
    if e < 2:
        return lqs.new_zeros(b, 0, 2, h, w)
    lqs_1 = lqs[:, :-1].reshape(-1, c, h, w)  # (B*(E-1), 3, H, W)
    lqs_2 = lqs[:, 1:].reshape(-1, c, h, w)
    flows = spynet(lqs_1, lqs_2) if backward else spynet(lqs_2, lqs_1)
    return flows.view(b, e - 1, 2, h, w)
