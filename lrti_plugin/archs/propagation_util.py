"""The propagation skeleton shared by the LRTI-capable recurrent networks.

A clip run with :class:`~lrti_plugin.state.BoundaryStates` is treated as an *extended* clip: the K
LR frames before it, its T frames, the K frames after it. Flows are computed over the extended clip
(so the flows across the borders are those of the long pass), and each branch walks its frames in
its own processing order, starting from a *history* of K outputs taken from the states. Slots that
do not exist in the long clip are masked per sample, which reproduces the plain run's zero start.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from lrti_plugin.state import BoundaryStates, is_backward_branch

Real = Tuple[bool, ...]  # per sample: does this slot exist in the long clip


def autocast_device(t: Tensor) -> str:
    """The device type to give ``torch.autocast`` for ``t``: ``cpu`` for meta tensors (which the memory
    estimator runs the archs on; autocast has no meta device), else the tensor's own."""
    return 'cpu' if t.device.type == 'meta' else t.device.type


def check_lr_size(lqs: Tensor, min_size: int, why: str) -> None:
    """Raise ValueError unless ``lqs`` is (B, T, 3, H, W) with T >= 1 and H, W >= min_size."""
    if lqs.dim() != 5 or lqs.size(2) != 3 or lqs.size(1) < 1:
        raise ValueError(f'lqs: expected shape (B, T, 3, H, W), got {tuple(lqs.shape)}')
    if lqs.size(3) < min_size or lqs.size(4) < min_size:
        raise ValueError(f'lqs: LR height and width must be >= {min_size} ({why}), got shape {tuple(lqs.shape)} '
                         f'(H={lqs.size(3)}, W={lqs.size(4)})')


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


@dataclass
class BranchWalk:
    """How one branch walks over a clip, in its processing order.

    Positions p = 0 .. K'-1 are the history (outside the clip, oldest first), p = K' .. K'+T-1 the
    clip's frames. ``flows[p]`` (B, 2, h, w) is the flow that warps the output of position p-1 onto
    position p (``None`` for p = 0).
    """

    frames: List[int]
    history: List[Tensor]
    history_real: List[Real]
    flows: List[Optional[Tensor]]

    def real(self, p: int, batch: int) -> Real:
        """Per sample, whether position p holds a real frame (positions < 0 never do)."""
        if p < 0:
            return (False, ) * batch
        if p < len(self.history):
            return self.history_real[p]
        return (True, ) * batch


def branch_walk(name: str, num_frames: int, init: Optional[BoundaryStates], kb: int, ka: int,
                flows_forward: Tensor, flows_backward: Tensor) -> BranchWalk:
    """The walk of branch ``name`` over a clip of ``num_frames`` frames (see :class:`BranchWalk`).

    Args:
        name (str): branch name; 'backward...' walks from the last frame to the first.
        num_frames (int): T.
        init (BoundaryStates | None): borders of the clip.
        kb, ka (int): outside frames before/after the clip in the extended clip (see :func:`extend_clip`).
        flows_forward (Tensor): (B, kb+T-1, 2, h, w) ``pair_flows(..., backward=False)`` of frames [0, kb+T).
        flows_backward (Tensor): (B, T+ka-1, 2, h, w) ``pair_flows(..., backward=True)`` of frames [kb, E).
    """
    if is_backward_branch(name):
        frames = list(range(num_frames - 1, -1, -1))
        k = ka
        hist = [init.feats[name][:, j] for j in range(k - 1, -1, -1)] if k else []
        real = [tuple(j < n for n in init.num_after) for j in range(k - 1, -1, -1)] if k else []
        # extended positions from last to first; position e (relative to kb) warps e+1 onto e
        ext = list(range(num_frames + k - 1, -1, -1))
        flows = [None] + [flows_backward[:, e] for e in ext[1:]]
    else:
        frames = list(range(num_frames))
        k = kb
        order = init.order if init is not None else 0
        hist = [init.feats[name][:, order - k + j] for j in range(k)] if k else []
        real = [tuple(order - k + j >= order - n for n in init.num_before) for j in range(k)] if k else []
        flows = [None] + [flows_forward[:, e - 1] for e in range(1, num_frames + k)]
    return BranchWalk(frames, hist, real, flows)
