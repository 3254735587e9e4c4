"""Boundary states of bidirectional recurrent VSR networks: the propagation protocol.

Every LRTI-capable network (``LRTIBasicVSR``, ``LRTIBasicVSRPP``, the LRTI-VSR transformer) speaks it::

    sr = net(lqs)                                   # lqs (B, L, 3, H, W) -> (B, L, 3, sH, sW)
    sr, states = net(lqs, return_states=True)       # states: PropagationStates
    states = net(lqs, states_only=True)             # the states alone, no reconstruction (LRTI's long pass)
    init = states.window(s, T)                      # BoundaryStates: what clip [s, s+T) needs
    sr_clip = net(lqs[:, s:s + T], init_states=init)  # equals sr[:, s:s + T] (eval mode)

A network is a set of named *branches*. A branch whose name starts with ``'backward'`` runs from the
last frame to the first; every other branch runs forward in time. A branch of *order* K looks at
its own outputs at the K previous steps (BasicVSR: K = 1; BasicVSR++ and LRTI-VSR: K = 2). So a clip
``[s, s+T)`` cut from a longer clip needs, per forward branch, the branch outputs at frames
``s-K .. s-1``; per backward branch, those at ``s+T .. s+T+K-1``; and, so that the flows across the
border can be recomputed exactly, the K LR frames on each side. Where the long clip has no such
frame (windows touching either end), the slot is zero and counted as missing, and the network
starts from zeros there exactly as a plain run does.

This module is pure torch: it knows nothing of BasicSR or of any particular network.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def is_backward_branch(name: str) -> bool:
    """Whether branch ``name`` runs from the last frame to the first (the name starts with 'backward')."""
    return name.startswith('backward')


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class BoundaryStates:
    """What one clip needs from outside its borders (the ``init_states`` of a network's forward).

    Slots are in time order. ``feats[name][:, -1]`` is frame s-1 for a forward branch, and
    ``feats[name][:, 0]`` is frame s+T for a backward branch. Missing slots (no such frame in the long
    clip) hold zeros; which slots are real is given per sample by ``num_before``/``num_after``: the
    last ``num_before[b]`` slots before the clip and the first ``num_after[b]`` after it.

    Memory: ``B * K * (num_branches * C + 6) * H * W`` elements (K = order), i.e. negligible next to
    the clip's activations.

    Attributes:
        feats (dict[str, Tensor]): branch name -> (B, K, C, H, W) branch outputs just before the clip
            (forward branches) or just after it (backward branches).
        lqs_before (Tensor): (B, K, 3, H, W) the LR frames s-K .. s-1.
        lqs_after (Tensor): (B, K, 3, H, W) the LR frames s+T .. s+T+K-1.
        num_before (tuple[int]): per sample, how many of the K slots before the clip are real (0..K).
        num_after (tuple[int]): per sample, how many of the K slots after the clip are real (0..K).
    """

    feats: Dict[str, Tensor]
    lqs_before: Tensor
    lqs_after: Tensor
    num_before: Tuple[int, ...]
    num_after: Tuple[int, ...]

    @property
    def order(self) -> int:
        """K, the number of slots on each side."""
        return self.lqs_before.size(1)

    @property
    def batch_size(self) -> int:
        return self.lqs_before.size(0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return _nbytes([*self.feats.values(), self.lqs_before, self.lqs_after])

    def num_real(self, name: str) -> Tuple[int, ...]:
        """Per sample, how many border slots of branch ``name`` are real."""
        return self.num_after if is_backward_branch(name) else self.num_before

    def detach(self) -> 'BoundaryStates':
        """A copy whose tensors are cut from the autograd graph (truncated back-propagation)."""
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> 'BoundaryStates':
        """A copy with every tensor moved/cast by ``Tensor.to(*args, **kwargs)`` (device, dtype)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def _map(self, fn) -> 'BoundaryStates':
        return BoundaryStates({k: fn(v) for k, v in self.feats.items()}, fn(self.lqs_before), fn(self.lqs_after),
                              self.num_before, self.num_after)

    @staticmethod
    def cat(states: Sequence['BoundaryStates']) -> 'BoundaryStates':
        """Batch the states of several clips along B (same branches, order, C, H, W, device, dtype).

        The clips must be batched in the same order, e.g. for windows ``starts`` of one long clip::

            init = BoundaryStates.cat([long_states.window(s, T) for s in starts])
            clips = torch.cat([lqs[:, s:s + T] for s in starts], dim=0)  # (N*B, T, 3, H, W)

        Windows with different numbers of real neighbours (one at the start, one in the middle) can
        share a batch: each sample keeps its own counts.
        """
        if not states:
            raise ValueError('BoundaryStates.cat: no states given')
        names = list(states[0].feats)
        for st in states[1:]:
            if list(st.feats) != names or st.order != states[0].order:
                raise ValueError(f'BoundaryStates.cat: branches/order differ: {names} (order {states[0].order}) '
                                 f'vs {list(st.feats)} (order {st.order})')
        return BoundaryStates(
            {k: torch.cat([st.feats[k] for st in states], dim=0) for k in names},
            torch.cat([st.lqs_before for st in states], dim=0),
            torch.cat([st.lqs_after for st in states], dim=0),
            sum((st.num_before for st in states), ()),
            sum((st.num_after for st in states), ()),
        )


cat_states = BoundaryStates.cat


@dataclass(frozen=True)
class PropagationStates:
    """The record of one pass over a clip, from which the borders of any window can be cut.

    Kept by ``net(lqs, return_states=True)``: each branch's output features at every frame, the LR
    frames, and the borders the pass itself started from (``context``; ``None`` for a plain pass
    from zero states), so windows touching the clip's ends get the outside frames right too.

    Memory: ``B * L * (num_branches * C + 3) * H * W`` elements (BasicVSR++ at C = 64, 4 branches,
    L = 100, one 64x64 LR patch: 420 MB in float32). The pass holds these tensors anyway until
    its reconstruction (BasicVSR++ keeps every branch's features; BasicVSR the backward ones), so
    peak memory grows little; keeping the record alive only extends their lifetime. Cut the windows
    you need (:meth:`window`, which copies), then drop the record.

    Attributes:
        feats (dict[str, Tensor]): branch name -> (B, L, C, H, W) branch outputs at every frame.
        lqs (Tensor): (B, L, 3, H, W) the LR frames of the pass.
        order (int): K, the number of previous steps a branch looks at.
        context (BoundaryStates | None): the borders the pass started from.
    """

    feats: Dict[str, Tensor]
    lqs: Tensor
    order: int
    context: Optional[BoundaryStates] = None

    @property
    def length(self) -> int:
        """L, the number of frames of the pass."""
        return self.lqs.size(1)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors (including the context)."""
        ctx = self.context.nbytes if self.context is not None else 0
        return _nbytes([*self.feats.values(), self.lqs]) + ctx

    @classmethod
    def from_frames(cls, feats: Dict[str, Sequence[Tensor]], lqs: Tensor, order: int,
                    context: Optional[BoundaryStates] = None) -> 'PropagationStates':
        """The record of a pass from each branch's per-frame outputs (L x (B, C, H, W), in time order)."""
        return cls({k: torch.stack(v, dim=1) for k, v in feats.items()}, lqs, order, context)

    def detach(self) -> 'PropagationStates':
        """A copy whose tensors are cut from the autograd graph."""
        ctx = self.context.detach() if self.context is not None else None
        return PropagationStates({k: v.detach() for k, v in self.feats.items()}, self.lqs.detach(), self.order, ctx)

    def to(self, *args, **kwargs) -> 'PropagationStates':
        """A copy with every tensor moved/cast by ``Tensor.to(*args, **kwargs)``."""
        ctx = self.context.to(*args, **kwargs) if self.context is not None else None
        return PropagationStates({k: v.to(*args, **kwargs) for k, v in self.feats.items()},
                                 self.lqs.to(*args, **kwargs), self.order, ctx)

    def window(self, start: int, length: int) -> BoundaryStates:
        """The borders of clip ``[start, start + length)``: pass them as ``init_states`` with that clip.

        Args:
            start (int): s, first frame of the clip, 0 <= s.
            length (int): T, number of frames, s + T <= L.

        Returns:
            BoundaryStates: batch B; its tensors are copies (the record can be freed).
        """
        if not (isinstance(start, int) and isinstance(length, int)) or start < 0 or length < 1 \
                or start + length > self.length:
            raise ValueError(f'window(start={start}, length={length}) is outside the clip of {self.length} frames')
        k, end = self.order, start + length
        before, after = range(start - k, start), range(end, end + k)
        feats = {}
        for name, full in self.feats.items():
            frames = after if is_backward_branch(name) else before
            feats[name] = torch.stack([self._frame(full, name, j) for j in frames], dim=1)  # (B, K, C, H, W)
        lqs_before = torch.stack([self._frame(self.lqs, None, j) for j in before], dim=1)  # (B, K, 3, H, W)
        lqs_after = torch.stack([self._frame(self.lqs, None, j) for j in after], dim=1)
        ctx_before = self.context.num_before if self.context is not None else (0, ) * self.lqs.size(0)
        ctx_after = self.context.num_after if self.context is not None else (0, ) * self.lqs.size(0)
        num_before = tuple(min(k, start + n) for n in ctx_before)
        num_after = tuple(min(k, self.length - end + n) for n in ctx_after)
        return BoundaryStates(feats, lqs_before, lqs_after, num_before, num_after)

    def windows(self, starts: Sequence[int], length: int) -> BoundaryStates:
        """:meth:`window` for several starts, batched along B in the order of ``starts`` (see
        :meth:`BoundaryStates.cat`)."""
        return BoundaryStates.cat([self.window(s, length) for s in starts])

    def _frame(self, full: Tensor, name: Optional[str], j: int) -> Tensor:
        """Frame j (may lie outside [0, L): then from the context, or zeros) of a (B, L, ...) tensor."""
        if 0 <= j < self.length:
            return full[:, j].clone()
        ctx, k = self.context, self.order
        if ctx is None or j < -k or j >= self.length + k:
            return torch.zeros_like(full[:, 0])
        if name is None:
            src = ctx.lqs_before if j < 0 else ctx.lqs_after
        else:
            src = ctx.feats[name]
        return (src[:, k + j] if j < 0 else src[:, j - self.length]).clone()


def check_boundary_states(init: BoundaryStates, names: List[str], order: int, lqs: Tensor, feat_shape) -> None:
    """Raise ValueError if ``init`` does not fit a network with these branches/order and this clip.

    Args:
        init (BoundaryStates): the states given as ``init_states``.
        names (list[str]): the network's branch names.
        order (int): the network's K.
        lqs (Tensor): (B, T, 3, H, W) the clip.
        feat_shape (tuple[int]): (C, h, w) of one branch feature.
    """
    if not isinstance(init, BoundaryStates):
        raise ValueError(f'init_states: expected BoundaryStates, got {type(init).__name__}')
    if sorted(init.feats) != sorted(names) or init.order != order:
        raise ValueError(f'init_states: branches {sorted(init.feats)} of order {init.order} do not match the '
                         f'network ({sorted(names)}, order {order})')
    b, _, c, h, w = lqs.shape
    if tuple(init.lqs_before.shape) != (b, order, c, h, w) or tuple(init.lqs_after.shape) != (b, order, c, h, w):
        raise ValueError(f'init_states: LR borders of shape {tuple(init.lqs_before.shape)} do not fit the clip '
                         f'{tuple(lqs.shape)}')
    for name in names:
        if tuple(init.feats[name].shape) != (b, order, *feat_shape):
            raise ValueError(f'init_states: branch {name!r} has shape {tuple(init.feats[name].shape)}, '
                             f'expected {(b, order, *feat_shape)}')
