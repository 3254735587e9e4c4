"""Streaming inference over arbitrarily long videos with any :class:`~lrti_plugin.archs.propagation.RecurrentVSR`.

Four modes, each a generator of ``(start, sr)`` pieces in time order (``sr``: (1, n, 3, sH, sW) for frames
``start .. start+n-1``), reading LR frames through ``read(start, stop) -> (1, stop-start, 3, H, W)``:

``exact``
    The output of one whole-sequence pass, in memory bounded by the chunk. The video is cut into chunks;
    one no-grad *sweep* per branch, in that branch's direction, computes the branch chunk by chunk from the
    *border states* (the K outputs next to each chunk) that the previous chunk left, while the branches
    before it are recomputed inside each chunk from their own saved borders. Only the borders are kept
    (``BorderStore``: K x (C, h, w) per branch and chunk, on the host or spilled to a folder); the last
    sweep (a forward branch in every network of the plugin) reconstructs and emits each chunk as it goes.
    Compute: branch j of n runs n - j times (BasicVSR: 1.5 branch passes per branch on average; BasicVSR++
    and LRTI-VSR: 2.5), the reconstruction once; the encoder and flows once per sweep that needs them.
``lookahead``
    Online, one sweep: forward branches carry their states from chunk to chunk exactly as a whole pass
    would (given their inputs), backward branches start from zeros ``lookahead`` frames after the chunk's
    end (warm-up over R future frames). Compute (T + R) / T of a whole pass.
``chunks``
    Independent chunks from zero states, as BasicSR's and mmagic's inference scripts cut long videos.
``whole``
    One pass over every frame (memory grows with the video).

Every chunk has at least K frames (the last chunks are balanced, not cut short), so the border a chunk
leaves is always its own outputs.
"""
import os
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from lrti_plugin.archs.propagation import RecurrentVSR
from lrti_plugin.state import BoundaryStates, is_backward_branch

MODES = ('exact', 'lookahead', 'chunks', 'whole')
Reader = Callable[[int, int], Tensor]


def chunk_spans(num_frames: int, chunk: int, min_len: int = 1) -> List[Tuple[int, int]]:
    """Cut ``num_frames`` frames into consecutive ``(start, stop)`` spans of at most ``chunk`` frames and at
    least ``min_len`` (when the video has that many): as many spans as ``ceil(num_frames / chunk)``, the
    sizes differing by at most one, e.g. 10 frames, chunk 4 -> 4, 3, 3."""
    if num_frames < 1:
        raise ValueError(f'num_frames: expected at least 1 frame, got {num_frames}')
    if chunk < max(1, min_len):
        raise ValueError(f'chunk: expected at least {max(1, min_len)} frames, got {chunk}')
    count = -(-num_frames // chunk)
    count = max(1, min(count, num_frames // max(1, min_len)))
    base, extra = divmod(num_frames, count)
    spans, start = [], 0
    for c in range(count):
        stop = start + base + (1 if c < extra else 0)
        spans.append((start, stop))
        start = stop
    return spans


class BorderStore:
    """The border states of an exact stream: ``(branch, chunk) -> (1, K, C, h, w)`` incoming border.

    Kept on the CPU (``folder=None``) or written to ``folder`` as one file each, so that host memory stays
    flat however long the video is (the files total K * C * h * w * 4 bytes per branch and chunk).

    In memory, with ``slots`` (the number of chunks) given, each branch's borders live in one tensor of
    ``slots`` borders allocated at its first ``put``: host memory then grows by the borders' bytes and no
    more. Borders kept as separate tensors, allocated between a chunk's much larger temporaries, pin heap
    pages that glibc cannot give back: measured, that tripled the growth (244 MB instead of 16 MB of borders
    over 600 frames of a 64x64, 16-channel net)."""

    def __init__(self, folder: Optional[str] = None, slots: Optional[int] = None):
        self.folder = folder
        self.slots = slots
        self._mem: Dict[Tuple[str, int], Tensor] = {}
        self._slabs: Dict[str, Tensor] = {}
        self._filled: set = set()

    def put(self, name: str, chunk: int, border: Tensor) -> None:
        border = border.detach().to('cpu')
        if self.folder is not None:
            torch.save(border, os.path.join(self.folder, f'{name}_{chunk}.pt'))
        elif self.slots is None:
            self._mem[name, chunk] = border
        else:
            if not 0 <= chunk < self.slots:
                raise IndexError(f'BorderStore: chunk {chunk} outside its {self.slots} slots')
            slab = self._slabs.get(name)
            if slab is None:
                slab = self._slabs[name] = border.new_empty(self.slots, *border.shape)
            slab[chunk].copy_(border)
            self._filled.add((name, chunk))

    def get(self, name: str, chunk: int) -> Optional[Tensor]:
        if self.folder is not None:
            path = os.path.join(self.folder, f'{name}_{chunk}.pt')
            return torch.load(path) if os.path.isfile(path) else None
        if self.slots is None:
            return self._mem.get((name, chunk))
        return self._slabs[name][chunk] if (name, chunk) in self._filled else None

    @property
    def nbytes(self) -> int:
        """Host bytes held (0 when spilled to a folder)."""
        tensors = list(self._mem.values()) + list(self._slabs.values())
        return sum(t.numel() * t.element_size() for t in tensors)


def sweeps(net: RecurrentVSR, mode: str) -> int:
    """How many times :func:`stream` goes over the video in ``mode`` (for a progress bar: ``progress`` is called
    with ``num_frames * sweeps`` frames in all)."""
    if mode != 'exact':
        return 1
    return len(net.branches) + (1 if is_backward_branch(net.branches[-1]) else 0)


def stream(net: RecurrentVSR, read: Reader, num_frames: int, mode: str = 'exact', chunk: int = 20,
           lookahead: int = 10, spill: bool = False,
           progress: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[int, Tensor]]:
    """Super-resolve ``num_frames`` frames read by ``read`` in ``mode`` (see the module docstring).

    Args:
        net (RecurrentVSR): the network, in eval mode (call under ``torch.no_grad()``).
        read (callable): ``read(start, stop)`` -> (1, stop-start, 3, H, W) LR frames on the net's device.
        num_frames (int): frames of the video.
        mode (str): ``exact`` | ``lookahead`` | ``chunks`` | ``whole``.
        chunk (int): frames per chunk (not used by ``whole``); at least the net's order K.
        lookahead (int): R, future frames the backward branches warm up over (``lookahead`` mode only).
        spill (bool): ``exact``: keep the border states in a temporary folder instead of host memory.
        progress (callable | None): called with the number of frames of every chunk processed, in every sweep
            (:func:`sweeps`).

    Yields:
        tuple: (start, (1, n, 3, sH, sW) SR frames start .. start+n-1), in time order, covering every frame.
    """
    if mode not in MODES:
        raise ValueError(f'mode: expected one of {", ".join(MODES)}, got {mode!r}')
    if net.training:
        raise ValueError('stream: put the network in eval mode first (net.eval())')
    progress = progress or (lambda n: None)
    if mode == 'whole':
        out = net(read(0, num_frames))
        progress(num_frames)
        yield 0, out
        return
    spans = chunk_spans(num_frames, chunk, net.order)
    if mode == 'chunks':
        for start, stop in spans:
            out = net(read(start, stop))
            progress(stop - start)
            yield start, out
    elif mode == 'lookahead':
        if not isinstance(lookahead, int) or lookahead < 0:
            raise ValueError(f'lookahead: expected frames >= 0, got {lookahead!r}')
        yield from _lookahead(net, read, num_frames, spans, lookahead, progress)
    elif spill:
        with tempfile.TemporaryDirectory(prefix='lrti_borders_') as folder:
            yield from _exact(net, read, num_frames, spans, BorderStore(folder), progress)
    else:
        yield from _exact(net, read, num_frames, spans, BorderStore(slots=len(spans)), progress)


def tile_spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Cut one axis of ``size`` pixels into tiles: ``(start, stop, core_start, core_stop)`` each, where the
    cores partition ``[0, size)`` and each tile is its core widened by ``overlap`` on both sides (clipped to
    the frame; tiles at the frame's edges are shifted inwards to keep ``tile`` pixels)."""
    if tile >= size:
        return [(0, size, 0, size)]
    core = tile - 2 * overlap
    if core < 1:
        raise ValueError(f'tile: {tile} pixels leave no core with an overlap of {overlap} on both sides')
    count = max(1, -(-(size - 2 * overlap) // core))
    while True:  # edge tiles need their core plus one overlap, the others plus two
        bounds = [round(i * size / count) for i in range(count + 1)]
        need = [b - a + overlap * ((i > 0) + (i < count - 1)) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        if max(need) <= tile:
            break
        count += 1
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        start = min(max(0, a - overlap), size - tile)
        spans.append((start, start + tile, a, b))
    return spans


def stream_tiled(net: RecurrentVSR, read: Reader, num_frames: int, tile: Tuple[int, int], overlap: int = 16,
                 mode: str = 'exact', chunk: int = 20, lookahead: int = 10, spill: bool = False,
                 progress: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[int, Tensor]]:
    """:func:`stream` over spatial tiles of the LR frames, for frames too large for the device.

    Each tile (``tile`` = (h, w) LR pixels, widened by ``overlap`` pixels of context on every side that has
    a neighbour) is streamed on its own; the SR pieces are assembled on the CPU from the tiles' cores (cropped
    seams: every output pixel comes from exactly one tile). Where ``overlap`` covers the network's receptive
    field over the clip the result equals the untiled one; with less, pixels near a seam see less context.
    All tiles advance together, one chunk at a time, so memory stays bounded by the chunk and the tile.
    ``progress`` counts each tile's frames in proportion to its share of the tiles."""
    first = read(0, 1)
    height, width = first.shape[-2:]
    rows, cols = tile_spans(height, tile[0], overlap), tile_spans(width, tile[1], overlap)
    streams = []
    share = (lambda n: progress(n / (len(rows) * len(cols)))) if progress else None
    for y0, y1, _, _ in rows:
        for x0, x1, _, _ in cols:
            def tile_read(a, b, y0=y0, y1=y1, x0=x0, x1=x1):
                return read(a, b)[..., y0:y1, x0:x1]
            streams.append(stream(net, tile_read, num_frames, mode, chunk, lookahead, spill, share))
    for pieces in zip(*streams):
        start = pieces[0][0]
        scale = pieces[0][1].size(-1) // (cols[0][1] - cols[0][0])
        n = pieces[0][1].size(1)
        canvas = torch.empty(1, n, 3, height * scale, width * scale, dtype=pieces[0][1].dtype)
        for (_, sr), ((y0, _, cy0, cy1), (x0, _, cx0, cx1)) in zip(pieces, [(r, c) for r in rows for c in cols]):
            core = sr[..., (cy0 - y0) * scale:(cy1 - y0) * scale, (cx0 - x0) * scale:(cx1 - x0) * scale]
            canvas[..., cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = core.to('cpu')
        yield start, canvas


def _exact(net: RecurrentVSR, read: Reader, num_frames: int, spans, store: BorderStore, progress):
    names, k = tuple(net.branches), net.order
    last = len(names) - 1
    emit_in_last_sweep = not is_backward_branch(names[last])
    for j, name in enumerate(names):
        emit = j == last and emit_in_last_sweep
        order = range(len(spans) - 1, -1, -1) if is_backward_branch(name) else range(len(spans))
        for c in order:
            lqs, init = _chunk_input(net, read, num_frames, spans, c, names[:j + 1], store)
            feats, out = net.propagate(lqs, init, branches=names[:j + 1], outputs=None if emit else 0)
            progress(lqs.size(1))
            if is_backward_branch(name) and c > 0:
                store.put(name, c - 1, torch.stack(feats[name][:k], dim=1))
            elif not is_backward_branch(name) and c < len(spans) - 1:
                store.put(name, c + 1, torch.stack(feats[name][-k:], dim=1))
            if emit:
                yield spans[c][0], out
    if not emit_in_last_sweep:  # a network whose last branch runs backward: one more pass, in time order
        for c in range(len(spans)):
            lqs, init = _chunk_input(net, read, num_frames, spans, c, names, store)
            out = net.propagate(lqs, init)[1]
            progress(lqs.size(1))
            yield spans[c][0], out


def _lookahead(net: RecurrentVSR, read: Reader, num_frames: int, spans, lookahead: int, progress):
    names, k = tuple(net.branches), net.order
    carry = BorderStore()
    for start, stop in spans:
        end = min(num_frames, stop + lookahead)
        lqs, init = _chunk_input(net, read, num_frames, [(start, end)], 0, names, carry, after=False)
        feats, out = net.propagate(lqs, init, outputs=stop - start)
        progress(stop - start)
        for name in names:
            if not is_backward_branch(name):
                carry.put(name, 0, torch.stack(feats[name][stop - start - k:stop - start], dim=1))
        yield start, out


def _chunk_input(net: RecurrentVSR, read: Reader, num_frames: int, spans, c: int, names, store: BorderStore,
                 after: bool = True) -> Tuple[Tensor, Optional[BoundaryStates]]:
    """The LR frames of chunk ``c`` and its BoundaryStates for branches ``names`` (each branch's incoming
    border from ``store``; zeros where the store has none, i.e. at the video's ends). ``after=False``: the
    frames after the chunk are treated as missing (lookahead: backward branches start from zeros)."""
    k = net.order
    start, stop = spans[c]
    nb = min(k, start)
    na = min(k, num_frames - stop) if after else 0
    frames = read(start - nb, stop + na)  # (1, nb + T + na, 3, H, W)
    lqs = frames[:, nb:nb + stop - start]
    if nb == 0 and na == 0 and all(store.get(n, c) is None for n in names):
        return lqs, None
    b, _, ch, h, w = lqs.shape
    lqs_before = lqs.new_zeros(b, k, ch, h, w)
    lqs_after = lqs.new_zeros(b, k, ch, h, w)
    lqs_before[:, k - nb:] = frames[:, :nb]
    lqs_after[:, :na] = frames[:, nb + stop - start:]
    shape = net.state_shape(lqs)
    feats = {}
    for name in names:
        border = store.get(name, c)
        feats[name] = border.to(lqs) if border is not None else lqs.new_zeros(b, k, *shape)
    return lqs, BoundaryStates(feats, lqs_before, lqs_after, (nb, ) * b, (na, ) * b)
