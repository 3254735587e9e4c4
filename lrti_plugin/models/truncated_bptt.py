"""The LRTI training strategy as plain functions: a long pass without gradient, then short windows with it.

One iteration (method.md, section 2), for a long clip ``lqs`` (B, L, 3, H, W) and N windows per sample
starting at ``starts`` (B, N)::

    states = long_pass(net, lqs)                                   # no grad, eval mode: PropagationStates
    clips, gts, init = window_batch(lqs, gt, starts, states)       # (N*B, T, ...), BoundaryStates
    del states                                                     # only the windows' borders stay
    out = net(clips, init_states=init)                             # with gradient; loss on the windows only
    # or, one optimiser step per window:  for clip, gt_, init_ in split_windows(clips, gts, init, N): ...

Back-propagation stops at the window borders (truncated BPTT); the forward values are exact: in eval
mode with the same weights, ``out`` equals the long pass's output on those frames. Windows are
ordered window-major: row ``j * B + b`` is window j of sample b.

Glossary: B batch, L long clip, T window (short clip), N windows, s start, K the net's order.
"""
import inspect
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from lrti_plugin.archs.propagation_util import sample_rms
from lrti_plugin.state import BoundaryStates, PropagationStates

_PROTOCOL_ARGS = ('init_states', 'return_states')


def bare_module(net: nn.Module) -> nn.Module:
    """The network inside a DataParallel/DistributedDataParallel wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, (DataParallel, DistributedDataParallel)) else net


def forward_accepts(net: nn.Module, *names: str) -> bool:
    """Whether ``net.forward`` (unwrapped) takes every keyword in ``names``."""
    params = inspect.signature(bare_module(net).forward).parameters
    return all(name in params for name in names)


def supports_protocol(net: nn.Module) -> bool:
    """Whether ``net.forward`` (unwrapped) accepts ``init_states`` and ``return_states`` (lrti_plugin.state)."""
    return forward_accepts(net, *_PROTOCOL_ARGS)


def check_protocol(net: nn.Module) -> None:
    """Raise ValueError naming the arch if it does not speak the propagation protocol."""
    if not supports_protocol(net):
        name = type(bare_module(net)).__name__
        raise ValueError(f'train.lrti: network_g type {name!r} does not speak the propagation protocol (its forward '
                         f'must accept {" and ".join(_PROTOCOL_ARGS)}); use LRTIBasicVSR, LRTIBasicVSRPP or LRTIVSR, '
                         f'or remove train.lrti to train plain clips')


def long_pass(net: nn.Module, lqs: Tensor) -> PropagationStates:
    """Run the long clip without gradient, in eval mode, and keep the states.

    A network whose forward accepts ``states_only`` skips its reconstruction (nothing of it is used);
    one that only speaks the basic protocol runs whole and its output is dropped. The network's
    train/eval mode is restored afterwards. A DDP/DP wrapper is bypassed: the bare
    module runs, so DDP's reducer never sees this forward (there is nothing to reduce).

    Args:
        net (nn.Module): A protocol network (or a wrapper of one); the current or the EMA weights.
        lqs (Tensor): (B, L, 3, H, W) the long LR clip.

    Returns:
        PropagationStates: every branch's (B, L, C, H, W) outputs and the LR frames; detached, so no
        tensor has ``requires_grad`` or a ``grad_fn``, whatever the caller's grad mode.
    """
    net = bare_module(net)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            if forward_accepts(net, 'states_only'):
                states = net(lqs, states_only=True)
            else:
                _, states = net(lqs, return_states=True)
    finally:
        net.train(was_training)
    return states.detach()


def check_long_clip_batch(lq: Tensor, gt: Tensor, starts: Tensor, clip_frames: int, num_clips: int) -> None:
    """Raise ValueError unless the tensors form a long-clip batch (``LRTILongClipDataset`` batched).

    Args:
        lq (Tensor): (B, L, 3, H, W) long LR clips.
        gt (Tensor): (B, N, T, 3, sH, sW) GT of the N windows.
        starts (Tensor): (B, N) integer window starts, 0 <= s <= L - T.
        clip_frames (int): T expected from the options.
        num_clips (int): N expected from the options.
    """
    if lq.dim() != 5 or gt.dim() != 6 or starts.dim() != 2:
        raise ValueError(f'long-clip batch: expected lq (B, L, 3, H, W), gt (B, N, T, 3, sH, sW), starts (B, N); '
                         f'got lq {tuple(lq.shape)}, gt {tuple(gt.shape)}, starts {tuple(starts.shape)}')
    b, length = lq.shape[:2]
    if tuple(starts.shape) != (b, num_clips) or tuple(gt.shape[:3]) != (b, num_clips, clip_frames):
        raise ValueError(f'long-clip batch: expected gt (B={b}, N={num_clips}, T={clip_frames}, ...) and starts '
                         f'(B={b}, N={num_clips}) (datasets.train num_clips/clip_frames); got gt '
                         f'{tuple(gt.shape)}, starts {tuple(starts.shape)}')
    if starts.dtype.is_floating_point or starts.dtype == torch.bool:
        raise ValueError(f'long-clip batch: starts must be integers, got {starts.dtype}')
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) + clip_frames > length):
        raise ValueError(f'long-clip batch: window starts {starts.tolist()} with T={clip_frames} do not fit '
                         f'the long clip of L={length} frames')


def window_batch(lqs: Tensor, gt: Tensor, starts: Tensor,
                 states: Optional[PropagationStates]) -> Tuple[Tensor, Tensor, Optional[BoundaryStates]]:
    """Cut the N windows of every sample and their boundary states, batched window-major.

    Args:
        lqs (Tensor): (B, L, 3, H, W) the long LR clips.
        gt (Tensor): (B, N, T, 3, sH, sW) the GT of the windows.
        starts (Tensor): (B, N) window starts (per sample: samples may differ).
        states (PropagationStates | None): the long pass of ``lqs``; None gives no init states
            (windows start from zeros, ``init: zeros``).

    Returns:
        tuple: clips (N*B, T, 3, H, W), gts (N*B, T, 3, sH, sW), and the BoundaryStates (batch N*B,
        on the device and dtype of ``lqs``; copies, so ``states`` can be freed) or None. Row
        ``j * B + b`` is window j of sample b.
    """
    b, n = starts.shape
    t = gt.size(2)
    rows = starts.tolist()  # B x N python ints
    clips = torch.stack([lqs[i, rows[i][j]:rows[i][j] + t] for j in range(n) for i in range(b)])  # (N*B, T, 3, H, W)
    gts = gt.transpose(0, 1).reshape(n * b, *gt.shape[2:])  # (N*B, T, 3, sH, sW)
    if states is None:
        return clips, gts, None
    if all(row == rows[0] for row in rows):  # same starts in every sample: cut all samples at once
        init = states.windows(rows[0], t)
    else:
        samples = [_sample(states, i) for i in range(b)]
        init = BoundaryStates.cat([samples[i].window(rows[i][j], t) for j in range(n) for i in range(b)])
    return clips, gts, init.to(device=lqs.device, dtype=lqs.dtype)


def state_rms(init: BoundaryStates) -> Tensor:
    """Per window, the largest root-mean-square of its branches' boundary states: (B,) float32.

    Missing slots hold zeros and only lower it. A non-finite state gives inf or nan.
    """
    per_branch = [sample_rms(f.float()) for f in init.feats.values()]  # each (B,)
    return torch.stack(per_branch).amax(0)


def guard_states(init: BoundaryStates, max_rms: float) -> Tuple[BoundaryStates, Tensor]:
    """Make windows whose states exceed ``max_rms`` (or are not finite) start from zero states.

    A flagged window gets zero states and no real slots (``num_before``/``num_after`` 0), so the network
    runs it exactly as a plain run from zeros (the LR frames beyond its borders are not used either).

    Args:
        init (BoundaryStates): batch B (windows).
        max_rms (float): threshold on :func:`state_rms`.

    Returns:
        tuple: (the guarded BoundaryStates, or ``init`` itself when nothing is flagged; (B,) bool flags).
    """
    rms = state_rms(init)
    flagged = ~(rms <= max_rms)  # nan and inf are flagged too
    if not bool(flagged.any()):
        return init, flagged
    keep = (~flagged).to(init.lqs_before.dtype)
    flags = flagged.tolist()

    def masked(t: Tensor) -> Tensor:
        return torch.nan_to_num(t, 0.0, 0.0, 0.0) * keep.view(-1, *([1] * (t.dim() - 1)))

    guarded = BoundaryStates({k: masked(v) for k, v in init.feats.items()}, init.lqs_before, init.lqs_after,
                             tuple(0 if f else n for f, n in zip(flags, init.num_before)),
                             tuple(0 if f else n for f, n in zip(flags, init.num_after)))
    return guarded, flagged


def split_windows(clips: Tensor, gts: Tensor, init: Optional[BoundaryStates],
                  num_clips: int) -> List[Tuple[Tensor, Tensor, Optional[BoundaryStates]]]:
    """Split a window-major batch from :func:`window_batch` into its N windows (``mode: sequential``).

    Args:
        clips (Tensor): (N*B, T, 3, H, W).
        gts (Tensor): (N*B, T, 3, sH, sW).
        init (BoundaryStates | None): batch N*B.
        num_clips (int): N.

    Returns:
        list: N tuples (clips (B, T, 3, H, W), gts (B, T, 3, sH, sW), BoundaryStates of batch B or None).
    """
    b = clips.size(0) // num_clips
    spans = [(j * b, (j + 1) * b) for j in range(num_clips)]
    return [(clips[lo:hi], gts[lo:hi], _rows(init, lo, hi) if init is not None else None) for lo, hi in spans]


def _rows(init: BoundaryStates, lo: int, hi: int) -> BoundaryStates:
    """Samples ``lo .. hi-1`` of a BoundaryStates batch."""
    return BoundaryStates({k: v[lo:hi] for k, v in init.feats.items()}, init.lqs_before[lo:hi],
                          init.lqs_after[lo:hi], init.num_before[lo:hi], init.num_after[lo:hi])


def _sample(states: PropagationStates, i: int) -> PropagationStates:
    """Sample i (batch 1) of a PropagationStates record (views, no copy)."""
    ctx = _rows(states.context, i, i + 1) if states.context is not None else None
    return PropagationStates({k: v[i:i + 1] for k, v in states.feats.items()}, states.lqs[i:i + 1], states.order, ctx)
