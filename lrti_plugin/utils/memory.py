"""Predict the device memory of a training step from an options file, on any machine (no GPU needed).

The network is built at its real widths on PyTorch's ``meta`` device (shapes, no values, no memory) and
run on the options' real crop size:

* **saved for backward**: ``torch.autograd.graph.saved_tensors_hooks`` adds up every distinct storage
  autograd keeps for the backward pass of a window pass with gradient (with the cached boundary states
  when ``train.lrti`` is on), at T = 1 and T = 2 frames: bytes per frame = the difference, the rest is
  per clip (the flows at the borders, the reconstruction's last frame...). The step's windows (``B * N``
  in ``mode: batch``, ``B`` in ``mode: sequential`` or plain training) scale it.
* **long pass peak**: a dispatch mode counts the bytes of every tensor an operator creates and frees
  them when the tensor dies; its high-water mark over a no-grad pass of 3 and of 6 frames gives the
  peak for L frames (the long pass keeps every branch's features, so it grows linearly with L).
* **backward working set**: with ``use_checkpoint`` one block is recomputed at a time (its
  activations: the saved bytes of a one-frame pass without checkpointing minus with, divided by the
  checkpointed blocks, each of which runs once per frame); plus the gradients of the largest
  activation (twice its size).
* **model state**: weights, gradients and two Adam moments (+ the EMA copy) in float32.

Predicted peak = model state + inputs + max(long pass peak, saved for backward + backward working set).
It counts tensors only, as ``torch.cuda.max_memory_allocated`` does (not the CUDA context, about
0.5-1 GiB, nor the allocator's fragmentation). Mixed precision (``use_amp``) is not modelled: the
numbers are those of float32, an upper bound. ``scripts/gpu_check.sh`` compares the prediction with
the measured peak on a GPU.
"""
import math
import weakref
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GIB = float(2**30)


@dataclass
class MemoryEstimate:
    """Bytes of each term (see the module docstring) and the geometry they were computed for."""
    arch: str
    lr_patch: int
    windows_per_step: int
    clip_frames: int
    long_frames: Optional[int]
    saved_per_frame: int
    saved_per_clip: int
    saved_for_backward: int
    recompute_block: int
    largest_activation: int
    long_pass_peak: int
    model_state: int
    inputs: int
    predicted_peak: int

    def as_dict(self) -> Dict:
        return asdict(self)


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensors operators create (views and in-place results excluded) while they live."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest = 0

    def add(self, tensor: torch.Tensor) -> None:
        nbytes = tensor.untyped_storage().nbytes()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        self.largest = max(self.largest, nbytes)
        weakref.finalize(tensor, self._free, nbytes)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        for ret, tensor in zip(func._schema.returns, results):
            if isinstance(tensor, torch.Tensor) and ret.alias_info is None:
                self.add(tensor)
        return out


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    storages: Dict[int, int] = {}
    keep = []

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()
        keep.append(tensor)  # the storage stays alive, so its id stays unique
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def build_meta_network(net_opt: Mapping) -> torch.nn.Module:
    """The registered arch of ``network_g`` at its widths, on the meta device, in train mode (no weights read)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    kwargs = {k: v for k, v in net_opt.items() if k not in ('type', 'spynet_path')}
    with torch.device('meta'):
        net = ARCH_REGISTRY.get(net_opt['type'])(**kwargs)
    return net.to('meta').train()


def _train_geometry(opt: Mapping) -> Dict:
    ds = opt['datasets']['train']
    scale = opt.get('scale', 4)
    lrti = (opt.get('train') or {}).get('lrti')
    lrti = {} if lrti is None and 'lrti' in (opt.get('train') or {}) else lrti
    geo = {'lr_patch': int(ds['gt_size']) // scale, 'batch': int(ds.get('batch_size_per_gpu', 1)), 'scale': scale}
    if lrti is not None:
        geo.update(clip_frames=int(ds['clip_frames']), long_frames=int(ds['long_frames']),
                   num_clips=int(ds['num_clips']), cached=lrti.get('init', 'cached') == 'cached',
                   sequential=lrti.get('mode', 'batch') == 'sequential')
    else:
        t = ds.get('clip_frames', ds.get('num_frame'))  # num_frame: the deprecated name
        geo.update(clip_frames=int(t), long_frames=None, num_clips=1, cached=False, sequential=True)
    return geo


_BORDER = 2  # frames kept before and after a measured window: room for a second-order history


def _long_pass(net, frames: int, size: int):
    """A no-grad long pass of ``frames`` frames on meta tensors: (live-tensor high-water mark, states, clip)."""
    from lrti_plugin.models import truncated_bptt as tbptt

    with LiveTensorBytes() as live:
        lq = torch.empty(1, frames, 3, size, size, device='meta')
        live.add(lq)
        states = tbptt.long_pass(net, lq)
    return live.peak, states, lq


def _window_pass(net, frames: int, lq, states) -> Callable[[], torch.Tensor]:
    """A closure running one window of ``frames`` frames with gradient, from ``states`` when given (else zeros)."""
    clip = lq[:, _BORDER:_BORDER + frames]
    init = states.window(_BORDER, frames) if states is not None else None
    return lambda: net(clip) if init is None else net(clip, init_states=init)


def _checkpointed_blocks(net) -> list:
    return [m for m in net.modules() if getattr(m, 'use_checkpoint', False) is True]


def estimate_training_memory(opt: Mapping) -> MemoryEstimate:
    """Predict the peak device memory of one training iteration of ``opt`` (see the module docstring)."""
    geo = _train_geometry(opt)
    net = build_meta_network(opt['network_g'])
    size, t = geo['lr_patch'], geo['clip_frames']
    windows = geo['batch'] * (1 if geo['sequential'] else geo['num_clips'])

    long_frames = 2 * _BORDER + 2  # the states of windows of 1 and 2 frames, and a long-pass measurement
    if geo['cached']:
        p_long, states, lq = _long_pass(net, long_frames, size)
    else:
        states, lq = None, torch.empty(1, long_frames, 3, size, size, device='meta')
    one_frame = _window_pass(net, 1, lq, states)
    s1 = saved_bytes(one_frame)
    s2 = saved_bytes(_window_pass(net, 2, lq, states))
    per_frame = max(s2 - s1, 0)
    per_clip = max(s1 - per_frame, 0)
    saved = windows * (per_clip + per_frame * t)

    recompute = 0
    blocks = _checkpointed_blocks(net)
    if blocks:  # each checkpointed block runs once per frame: its share of the un-checkpointed saved bytes
        for block in blocks:
            block.use_checkpoint = False
        try:
            s1_full = saved_bytes(one_frame)
        finally:
            for block in blocks:
                block.use_checkpoint = True
        recompute = windows * max(s1_full - s1, 0) // len(blocks)

    with LiveTensorBytes() as live:
        one_frame()
    largest = windows * live.largest

    long_peak = 0
    if geo['cached']:
        p_short = _long_pass(net, long_frames // 2, size)[0]
        growth = max(p_long - p_short, 0) / (long_frames - long_frames // 2)
        long_peak = geo['batch'] * (p_long + growth * (geo['long_frames'] - long_frames))

    params = sum(p.numel() * 4 for p in net.parameters())
    ema = (opt.get('train') or {}).get('ema_decay') or 0
    state = params * (4 + (1 if ema > 0 else 0))
    sr = geo['scale'] * size
    frames = geo['long_frames'] or t
    inputs = 4 * geo['batch'] * (frames * 3 * size * size + geo['num_clips'] * t * 3 * sr * sr)
    peak = state + inputs + max(long_peak, saved + recompute + 2 * largest)
    return MemoryEstimate(
        arch=opt['network_g']['type'], lr_patch=size, windows_per_step=windows, clip_frames=t,
        long_frames=geo['long_frames'], saved_per_frame=int(per_frame), saved_per_clip=int(per_clip),
        saved_for_backward=int(saved), recompute_block=int(recompute), largest_activation=int(largest),
        long_pass_peak=int(long_peak), model_state=int(state), inputs=int(inputs), predicted_peak=int(math.ceil(peak)))


def estimate_inference_memory(opt: Mapping, frames: int, height: int, width: int) -> Dict:
    """Predict the peak device memory of a whole-clip no-grad pass (validation, test) of ``frames`` LR frames of
    ``height`` x ``width``: the weights plus the live-tensor high-water mark, linear in the frame count (measured
    at 2 and 4 frames)."""
    net = build_meta_network(opt['network_g']).eval()

    def peak(n):
        with LiveTensorBytes() as live, torch.no_grad():
            lq = torch.empty(1, n, 3, height, width, device='meta')
            live.add(lq)
            out = net(lq)
            del out
        return live.peak

    p2, p4 = peak(2), peak(4)
    params = sum(p.numel() * 4 for p in net.parameters())
    activations = p2 + max(p4 - p2, 0) * (frames - 2) / 2
    return {'arch': opt['network_g']['type'], 'frames': frames, 'lr_size': [height, width],
            'per_frame': int(max(p4 - p2, 0) / 2), 'weights': int(params),
            'predicted_peak': int(math.ceil(params + activations))}
