"""The propagation engine: the one recurrence of every bidirectional recurrent network in the plugin.

A network is a set of named *branches* run one after the other (BasicVSR: ``backward, forward``; BasicVSR++
and LRTI-VSR: ``backward_1, forward_1, backward_2, forward_2``). A branch walks the clip in its direction
(names starting with ``backward`` from the last frame to the first); at every frame it looks at its own
outputs at the K previous steps of its walk (K = ``order``), aligned by optical flow, and at the outputs of
the branches run before it at the same frame. After the last branch, each frame is reconstructed from
what the branches produced there.

:class:`RecurrentVSR` owns all of that: branch order, walks, histories, the border slots of the
propagation protocol (:mod:`lrti_plugin.state`), flows, the states record, and the way a pass is cut
into pieces (a subset of branches, the reconstruction of some frames only: what
:mod:`lrti_plugin.archs.streaming` builds exact bounded-memory streaming from). A network supplies only

* :meth:`RecurrentVSR.encode`: per-frame features of the clip (what a step and the reconstruction see);
* :meth:`RecurrentVSR.step`: one branch at one frame: alignment of the :class:`History`, then the update;
* :meth:`RecurrentVSR.reconstruct`: one SR frame from the branches' outputs there;

plus ``branches``, ``order``, a ``spynet`` attribute, and :meth:`RecurrentVSR.state_shape`. A user's own
recurrent network plugs in the same way and gets window passes, ``states_only`` and streaming for free.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from basicsr.archs.arch_util import flow_warp
from torch import Tensor, nn

from lrti_plugin.archs.propagation_util import Real, bound_rms, extend_clip, pair_flows, run_in_float32, select
from lrti_plugin.state import BoundaryStates, PropagationStates, check_boundary_states, is_backward_branch
from lrti_plugin.utils.validate import expect_number


@dataclass
class BranchWalk:
    """How one branch walks over a clip, in its processing order.

    Index spaces (see :func:`branch_walk` for a worked example):

    * *time index* ``i``: frame i of the clip, 0 .. T-1;
    * *walk position* ``p``: the order the branch processes things in. Positions 0 .. K'-1 are the
      *history*, the K' border states the walk starts from (K' = 0 for a plain clip), oldest first;
      position K' + n is the n-th clip frame processed, ``frames[n]``.

    Attributes:
        frames (list[int]): time index of each clip position, in processing order.
        history (list[Tensor]): K' border states (B, C, h, w), oldest first.
        history_real (list[Real]): per history slot, per sample, whether the slot exists in the long clip.
        flows (list[Tensor | None]): ``flows[p]`` (B, 2, h, w) warps the output at position p-1 onto
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
                flows_forward: Optional[Tensor], flows_backward: Optional[Tensor]) -> BranchWalk:
    """The walk of branch ``name`` over a clip of ``num_frames`` frames (see :class:`BranchWalk`).

    A third index space lives here: the *extended index* ``e`` of the clip extended by its outside LR
    frames (:func:`~lrti_plugin.archs.propagation_util.extend_clip`): ``e = kb + i`` for clip frame i,
    ``e < kb`` the kb frames before the clip, ``e >= kb + T`` the ka frames after it. The flows are pairs
    of consecutive extended frames: ``flows_forward[:, e]`` warps extended frame e onto e+1 (pairs of
    frames [0, kb+T)), ``flows_backward[:, e']`` warps extended frame kb+e'+1 onto kb+e' (pairs of
    frames [kb, kb+T+ka)).

    Worked example, K = 2, a window of T = 3 frames with both borders (kb = ka = 2)::

        extended index e    0    1  |  2    3    4  |  5    6
        time index i                |  0    1    2  |
        forward walk p      0    1  |  2    3    4  |            history = states at s-2, s-1
        backward walk p             |  4    3    2  |  1    0    history = states at s+T+1, s+T

    Forward branch: ``frames = [0, 1, 2]``, position p is extended frame e = p, and ``flows[p] =
    flows_forward[:, p-1]`` (e = p-1 onto p). Backward branch: ``frames = [2, 1, 0]``, position p is
    extended frame e = kb + T + ka - 1 - p, and ``flows[p] = flows_backward[:, e - kb]`` (e+1 onto e).
    Without borders (kb = ka = 0) the history is empty and positions are the clip frames in walk order.

    Args:
        name (str): branch name; 'backward...' walks from the last frame to the first.
        num_frames (int): T.
        init (BoundaryStates | None): borders of the clip.
        kb, ka (int): outside frames before/after the clip in the extended clip.
        flows_forward (Tensor | None): (B, kb+T-1, 2, h, w) ``pair_flows(..., backward=False)`` of frames
            [0, kb+T); only read for a forward branch.
        flows_backward (Tensor | None): (B, T+ka-1, 2, h, w) ``pair_flows(..., backward=True)`` of frames
            [kb, kb+T+ka); only read for a backward branch.
    """
    if is_backward_branch(name):
        frames = list(range(num_frames - 1, -1, -1))
        k = ka
        hist = [init.feats[name][:, j] for j in range(k - 1, -1, -1)] if k else []
        real = [tuple(j < n for n in init.num_after) for j in range(k - 1, -1, -1)] if k else []
        ext = list(range(num_frames + k - 1, -1, -1))  # extended index minus kb, per position
        flows = [None] + [flows_backward[:, e] for e in ext[1:]]
    else:
        frames = list(range(num_frames))
        k = kb
        order = init.order if init is not None else 0
        hist = [init.feats[name][:, order - k + j] for j in range(k)] if k else []
        real = [tuple(order - k + j >= order - n for n in init.num_before) for j in range(k)] if k else []
        flows = [None] + [flows_forward[:, e - 1] for e in range(1, num_frames + k)]
    return BranchWalk(frames, hist, real, flows)


class History:
    """What a branch's step at walk position p sees of its own past: the outputs at p-1 .. p-K.

    ``k`` below counts steps back (1 = the previous output). Where a sample has no such output (before
    the clip's first frame, or a border slot missing in the long clip) a network does what a plain run
    does at a clip's start: zeros (:meth:`warped`), or the zero branch of its own alignment.
    """

    def __init__(self, walk: BranchWalk, outs: Dict[int, Tensor], p: int, batch: int):
        self._walk, self._outs, self._p, self._batch = walk, outs, p, batch
        self._flows: Dict[int, Tensor] = {}

    def real(self, k: int) -> Real:
        """Per sample, whether the output k steps back exists."""
        return self._walk.real(self._p - k, self._batch)

    def any(self, k: int) -> bool:
        """Whether some sample has an output k steps back."""
        return any(self.real(k))

    def feat(self, k: int) -> Tensor:
        """The output k steps back (B, C, h, w), unaligned; only where :meth:`any` is true."""
        return self._outs[self._p - k]

    def flow(self, k: int) -> Tensor:
        """(B, 2, h, w) flow that warps the output k steps back onto the current frame.

        k = 1 is the pair flow; k = 2 is BasicVSR++'s composition ``f1 + warp(f2, f1)`` (f1: p-1 onto p,
        f2: p-2 onto p-1).
        """
        if k not in self._flows:
            flow_1 = self._walk.flows[self._p]
            if k == 1:
                self._flows[1] = flow_1
            elif k == 2:
                self._flows[2] = flow_1 + flow_warp(self._walk.flows[self._p - 1], flow_1.permute(0, 2, 3, 1))
            else:
                raise NotImplementedError(f'History.flow: no flow composition for k={k} (orders 1 and 2 only)')
        return self._flows[k]

    def warped(self, k: int, zeros: Union[Tensor, Callable[[], Tensor]]) -> Tensor:
        """The output k steps back warped onto the current frame; zeros for samples without one.

        ``zeros`` is the zero tensor, or a function that makes it: then it is called only where some
        sample has no such output (a whole pass: at the first step of each branch only)."""
        real = self.real(k)
        if not any(real):
            return zeros() if callable(zeros) else zeros
        aligned = flow_warp(self.feat(k), self.flow(k).permute(0, 2, 3, 1))
        if all(real):
            return aligned
        return select(real, aligned, zeros() if callable(zeros) else zeros)


def is_mirrored(lqs: Tensor) -> bool:
    """Whether frame i equals frame T-1-i for all i (BasicSR's mirror-extended test, as a pure function).

    Meta tensors (the memory estimator) have no values: never mirrored there, the costlier case."""
    if lqs.size(1) % 2 or lqs.is_meta:
        return False
    first, second = torch.chunk(lqs, 2, dim=1)
    return bool(torch.equal(first, second.flip(1)))


class RecurrentVSR(nn.Module):
    """Base class of the bidirectional recurrent networks: the engine (see the module docstring).

    Subclasses set ``branches`` and ``order``, build a ``spynet``, and implement :meth:`check_input`,
    :meth:`encode`, :meth:`state_shape`, :meth:`step` and :meth:`reconstruct` (and optionally
    :meth:`flow_input`, :meth:`keep_on_host`). The class attribute ``reuse_mirrored_flows`` turns on
    BasicSR's BasicVSR++ shortcut: for a mirror-extended clip the forward flows are the backward ones.

    ``state_max_rms`` (every arch's constructor argument of that name, or :meth:`bound_states`) bounds the
    recurrence: each branch output (the state the next step warps and the reconstruction reads) is scaled
    down, per sample, to that root-mean-square when it exceeds it. A network trained on clips of T frames
    may learn a state update that grows past T steps and collapses on long videos (docs/results.md,
    sections 1 and 2); the bound keeps its states near the range training saw. None (the default) leaves
    the network as published. The bound is not a weight: a checkpoint loads and trains with or without it.
    """

    branches: Tuple[str, ...] = ()
    order: int = 1
    reuse_mirrored_flows: bool = False
    state_max_rms: Optional[float] = None

    def bound_states(self, max_rms: Optional[float]) -> 'RecurrentVSR':
        """Bound every branch output to root-mean-square ``max_rms`` (a positive number), or None: no bound.
        Returns the network."""
        if max_rms is not None:
            expect_number('state_max_rms', max_rms, 0, low_open=True, high=float('inf'))
        self.state_max_rms = None if max_rms is None else float(max_rms)
        return self

    # ---- what a network supplies -------------------------------------------------------------------------
    @property
    def min_input_size(self) -> int:
        """The smallest LR height and width the network accepts (inference pads smaller frames up to it)."""
        return 1

    def check_input(self, lqs: Tensor) -> None:
        """Raise ValueError naming the problem if ``lqs`` (B, T, 3, H, W) cannot be processed."""
        raise NotImplementedError

    def encode(self, lqs: Tensor) -> List[Tensor]:
        """Per-frame features of the clip: T tensors, each (B, ...)."""
        raise NotImplementedError

    def state_shape(self, lqs: Tensor) -> Tuple[int, int, int]:
        """(C, h, w) of one branch output for a clip ``lqs``."""
        raise NotImplementedError

    def step(self, name: str, frame: Tensor, others: List[Tensor], history: History) -> Tensor:
        """Branch ``name`` at one frame: ``frame`` its encoded features, ``others`` the outputs of the branches
        run before this one at the same frame (in branch order), ``history`` its own past. Returns the
        branch output (B, C, h, w)."""
        raise NotImplementedError

    def reconstruct(self, lq: Tensor, frame: Tensor, feats: Dict[str, Tensor]) -> Tensor:
        """One SR frame from the LR frame (B, 3, H, W), its encoded features and every branch's output there."""
        raise NotImplementedError

    def flow_input(self, lqs: Tensor) -> Tensor:
        """The frames SpyNet sees, (B, E, 3, h', w'), from the (extended) LR clip. Default: the clip."""
        return lqs

    def keep_on_host(self, lqs: Tensor) -> bool:
        """Whether per-frame features and outputs of this clip wait on the CPU (BasicSR's ``cpu_cache``)."""
        return False

    # ---- the engine ----------------------------------------------------------------------------------------
    def forward(self, lqs: Tensor, init_states: Optional[BoundaryStates] = None, return_states: bool = False,
                states_only: bool = False):
        """Super-resolve a clip.

        Args:
            lqs (Tensor): (B, T, 3, H, W) LR frames.
            init_states (BoundaryStates | None): borders of the clip (``states.window(s, T)``); None starts
                every branch from zeros, as a plain recurrent network does.
            return_states (bool): also return the :class:`PropagationStates` of this pass.
            states_only (bool): return only the :class:`PropagationStates`, skipping the reconstruction
                (what LRTI's long pass needs). Default: False.

        Returns:
            Tensor: (B, T, 3, sH, sW); with ``return_states``, a tuple (output, PropagationStates); with
            ``states_only``, the PropagationStates.
        """
        keep = return_states or states_only
        feats, out = self.propagate(lqs, init_states, outputs=0 if states_only else None, keep=keep)
        if states_only:
            return PropagationStates.from_frames(feats, lqs, self.order, init_states)
        if not return_states:
            return out
        return out, PropagationStates.from_frames(feats, lqs, self.order, init_states)

    def propagate(self, lqs: Tensor, init_states: Optional[BoundaryStates] = None,
                  branches: Optional[Sequence[str]] = None,
                  outputs: Optional[int] = None,
                  keep: bool = True) -> Tuple[Dict[str, List[Tensor]], Optional[Tensor]]:
        """One pass, or a piece of one: the branches ``branches`` (a prefix of ``self.branches``; default
        all) over ``lqs`` from ``init_states`` (which then holds those branches only), and the
        reconstruction of the first ``outputs`` frames (default all; 0: none; needs every branch).

        ``keep=False`` (only with every frame reconstructed) drops the branches' outputs at a frame as soon
        as its SR frame is made, as BasicSR's networks do: a pass then holds one branch fewer of features
        (``feats`` comes back empty).

        Returns:
            tuple: (feats, out): per branch run, its T outputs (B, C, h, w) in time order; the
            (B, outputs, 3, sH, sW) SR frames or None.
        """
        branches = tuple(self.branches if branches is None else branches)
        if branches != tuple(self.branches[:len(branches)]) or not branches:
            raise ValueError(f'branches: expected a non-empty prefix of {self.branches}, got {branches}')
        self.check_input(lqs)
        t = lqs.size(1)
        outputs = t if outputs is None else outputs
        if outputs and len(branches) < len(self.branches):
            raise ValueError('outputs: the reconstruction needs every branch')
        if not keep and outputs < t:
            raise ValueError('keep=False: only for a pass that reconstructs every frame')
        host = self.keep_on_host(lqs)
        frames = self.encode(lqs)
        if init_states is not None:
            check_boundary_states(init_states, list(branches), self.order, lqs, self.state_shape(lqs))
        flows_forward, flows_backward, kb, ka = self._flows(lqs, init_states, branches)
        feats: Dict[str, List[Tensor]] = {}
        srs: List[Optional[Tensor]] = [None] * outputs
        device = lqs.device

        def reconstruct(i: int, name: str, out: Tensor) -> None:
            # Right after the last branch's step at frame i, while its output is still in cache (as BasicSR does).
            if i < outputs:
                branch_feats = {k: v[i].to(device) for k, v in feats.items()}
                branch_feats[name] = out
                srs[i] = store(self.reconstruct(lqs[:, i], frames[i].to(device), branch_feats), host)
                if not keep:
                    for k in feats:  # every branch has been run at frame i: nothing reads these again
                        feats[k][i] = None

        for name in branches:
            walk = branch_walk(name, t, init_states, kb, ka, flows_forward, flows_backward)
            last = outputs and name == self.branches[-1]
            feats[name] = self._walk(name, walk, frames, feats, host, device, reconstruct if last else None,
                                     keep=keep or not last)
        if not keep:
            feats = {}
        if not outputs:
            return feats, None
        return feats, torch.stack(srs, dim=1)  # (B, outputs, 3, sH, sW)

    def _flows(self, lqs: Tensor, init: Optional[BoundaryStates], branches: Sequence[str]):
        """Pair flows over the clip extended by its outside frames, only in the directions ``branches`` walk
        (in float32 under mixed precision).

        Returns:
            tuple: flows_forward (B, kb+T-1, 2, h, w) or None, flows_backward (B, T+ka-1, 2, h, w) or None,
            kb, ka.
        """
        lqs_ext, kb, ka = extend_clip(lqs, init)  # (B, E, 3, H, W)
        seen = self.flow_input(lqs_ext)
        t = lqs.size(1)
        need_backward = any(is_backward_branch(n) for n in branches)
        need_forward = not all(is_backward_branch(n) for n in branches)
        flows_backward = run_in_float32(self._pair_flows_backward, seen[:, kb:]) if need_backward else None
        flows_forward = None
        if need_forward:
            if need_backward and self.reuse_mirrored_flows and init is None and is_mirrored(lqs):
                flows_forward = flows_backward.flip(1)  # the same pairs, in the other order
            else:
                flows_forward = run_in_float32(self._pair_flows_forward, seen[:, :kb + t])
        return flows_forward, flows_backward, kb, ka

    def _pair_flows_backward(self, frames: Tensor) -> Tensor:
        return pair_flows(self.spynet, frames, backward=True)

    def _pair_flows_forward(self, frames: Tensor) -> Tensor:
        return pair_flows(self.spynet, frames, backward=False)

    def _walk(self, name: str, walk: BranchWalk, frames: List[Tensor], feats: Dict[str, List[Tensor]], host: bool,
              device: torch.device, after_step=None, keep: bool = True) -> List[Tensor]:
        """Run branch ``name`` along ``walk``; returns its T outputs in time order (None each where not
        ``keep``: the walk then holds only the K outputs its history needs). ``after_step(i, name, out)``,
        if given, runs after the step at each frame i."""
        outs: Dict[int, Tensor] = dict(enumerate(walk.history))  # position -> (B, C, h, w)
        result: List[Tensor] = [None] * len(walk.frames)
        batch = frames[0].size(0)
        for p, i in enumerate(walk.frames, start=len(walk.history)):
            others = [feats[k][i].to(device) for k in feats]
            out = self.step(name, frames[i].to(device), others, History(walk, outs, p, batch))
            if self.state_max_rms is not None:
                out = bound_rms(out, self.state_max_rms)
            outs[p] = out
            outs.pop(p - self.order, None)  # only the last K outputs are looked at
            if keep:
                result[i] = store(out, host)
            if after_step is not None:
                after_step(i, name, out)
        return result


def store(x: Tensor, host: bool) -> Tensor:
    """Keep ``x`` on the CPU when caching on the host (BasicSR's ``cpu_cache``), else where it is."""
    return x.to('cpu') if host else x
