"""Streaming inference (lrti_plugin.archs.streaming): exact equals whole, bounded reads, lookahead and chunks,
for every arch of the plugin and for a user's own network plugged into the engine."""
from typing import Dict, List

import pytest
import torch
from _exactness import random_clip
from _flow_stub import TinyFlow, use_tiny_flow
from torch import Tensor, nn

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
from lrti_plugin.archs.basicvsrpp_arch import LRTIBasicVSRPP
from lrti_plugin.archs.lrti_vsr_arch import LRTIVSR
from lrti_plugin.archs.propagation import History, RecurrentVSR
from lrti_plugin.archs.streaming import BorderStore, chunk_spans, stream


class ForwardFirst(RecurrentVSR):
    """A user's network written against the engine: first order, and its *last* branch runs backward (so
    exact streaming needs its extra reconstruction pass). Step: warp, one conv; reconstruction: a conv."""

    branches = ('forward', 'backward')
    order = 1

    def __init__(self, c=4):
        super().__init__()
        self.c = c
        self.spynet = TinyFlow(1)
        self.convs = nn.ModuleList(nn.Conv2d(3 + c * (1 + j), c, 3, 1, 1) for j in range(len(self.branches)))
        self.out = nn.Conv2d(2 * c, 3, 3, 1, 1)

    def check_input(self, lqs):
        assert lqs.dim() == 5

    def encode(self, lqs) -> List[Tensor]:
        return list(lqs.unbind(1))

    def state_shape(self, lqs):
        return self.c, lqs.size(3), lqs.size(4)

    def step(self, name, frame, others, history: History):
        zeros = frame.new_zeros(frame.size(0), self.c, *frame.shape[2:])
        conv = self.convs[self.branches.index(name)]
        return torch.tanh(conv(torch.cat([frame, *others, 1.1 * history.warped(1, zeros)], dim=1)))

    def reconstruct(self, lq, frame, feats: Dict[str, Tensor]):
        return lq + self.out(torch.cat(list(feats.values()), dim=1))


def _net(kind):
    torch.manual_seed(0)
    if kind == 'basicvsr':
        net, h, w, t = LRTIBasicVSR(num_feat=8, num_block=1), 33, 35, 9
    elif kind == 'basicvsrpp':
        net, h, w, t = LRTIBasicVSRPP(mid_channels=8, num_blocks=1), 64, 64, 6
    elif kind == 'lrtivsr':
        net, h, w, t = LRTIVSR(num_feat=16, num_heads=2, window_size=4, num_groups=1, depth=1, mlp_ratio=2.0,
                               mid_channels=8, num_extract_block=1, drop_path_rate=0.0), 33, 35, 9
    else:
        net, h, w, t = ForwardFirst(), 20, 22, 9
    net = net.double().eval()
    if kind != 'user':
        use_tiny_flow(net)
    return net, random_clip(1, t, h, w, torch.float64, seed=2)


def _reader(lqs, log=None):
    def read(start, stop):
        assert 0 <= start <= stop <= lqs.size(1)
        if log is not None:
            log.append((start, stop))
        return lqs[:, start:stop]
    return read


def _run(net, lqs, **kwargs):
    pieces, expect = [], 0
    with torch.no_grad():
        for start, sr in stream(net, _reader(lqs), lqs.size(1), **kwargs):
            assert start == expect  # in time order, no gap
            expect += sr.size(1)
            pieces.append(sr)
    assert expect == lqs.size(1)
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize('frames, chunk, min_len, sizes', [
    (10, 4, 1, [4, 3, 3]), (10, 10, 1, [10]), (10, 20, 2, [10]), (5, 2, 2, [3, 2]), (3, 2, 2, [3]), (7, 1, 1, [1] * 7)])
def test_chunk_spans_balance_and_respect_the_minimum(frames, chunk, min_len, sizes):
    spans = chunk_spans(frames, chunk, min_len)
    assert [b - a for a, b in spans] == sizes
    assert spans[0][0] == 0 and spans[-1][1] == frames and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_chunk_spans_refuse_a_chunk_below_the_order():
    with pytest.raises(ValueError, match='chunk: expected at least 2'):
        chunk_spans(10, 1, 2)


@pytest.mark.parametrize('kind', ['basicvsr', 'basicvsrpp', 'lrtivsr', 'user'])
def test_exact_stream_equals_the_whole_pass(kind):
    net, lqs = _net(kind)
    with torch.no_grad():
        whole = net(lqs)
    for chunk in ((net.order, ) if kind == 'basicvsrpp' else (net.order, 4)):  # BasicVSR++ is the costly one
        got = _run(net, lqs, mode='exact', chunk=chunk)
        torch.testing.assert_close(got, whole, rtol=0, atol=1e-10, msg=f'{kind}, chunk {chunk}')
    chunks = _run(net, lqs, mode='chunks', chunk=3)  # the states carry information: exactness is not vacuous
    assert (chunks - whole).abs().max() > 1e-4


def test_exact_stream_with_borders_spilled_to_disk():
    net, lqs = _net('basicvsr')
    with torch.no_grad():
        whole = net(lqs)
    torch.testing.assert_close(_run(net, lqs, mode='exact', chunk=2, spill=True), whole, rtol=0, atol=1e-10)


def test_border_store_keeps_a_branch_in_one_preallocated_slab():
    """In memory, a branch's borders share one tensor allocated at the first put (separate small tensors pinned
    heap pages between the chunks' temporaries: the measured growth was 15x the borders' bytes)."""
    store = BorderStore(slots=3)
    a, b = torch.randn(1, 1, 2, 4, 4), torch.randn(1, 1, 2, 4, 4)
    store.put('backward_1', 2, a)
    assert store.nbytes == 3 * a.numel() * 4  # the whole slab, at once, and nothing else
    store.put('backward_1', 0, b)
    assert store.nbytes == 3 * a.numel() * 4
    a.zero_()  # a copy, not a view of the caller's tensor
    assert store.get('backward_1', 2).abs().sum() > 0
    torch.testing.assert_close(store.get('backward_1', 0), b)
    assert store.get('backward_1', 1) is None and store.get('forward_1', 0) is None
    with pytest.raises(IndexError, match='chunk 3 outside its 3 slots'):
        store.put('backward_1', 3, b)


@pytest.mark.parametrize('kind', ['basicvsr', 'lrtivsr'])
def test_exact_stream_reads_bounded_pieces(kind):
    net, lqs = _net(kind)
    log = []
    with torch.no_grad():
        list(stream(net, _reader(lqs, log), lqs.size(1), mode='exact', chunk=3))
    assert max(b - a for a, b in log) <= 3 + 2 * net.order  # a chunk and its K border frames each side
    assert len(log) == len(net.branches) * 3  # one read per chunk and sweep


def test_lookahead_over_the_whole_future_is_exact_and_without_it_is_not():
    net, lqs = _net('lrtivsr')
    with torch.no_grad():
        whole = net(lqs)
    full = _run(net, lqs, mode='lookahead', chunk=3, lookahead=lqs.size(1))
    torch.testing.assert_close(full, whole, rtol=0, atol=1e-10)
    none = _run(net, lqs, mode='lookahead', chunk=3, lookahead=0)
    assert (none - whole).abs()[:, :3].max() > 1e-4  # the first chunk's backward branches miss the future


def test_chunks_mode_is_independent_passes():
    net, lqs = _net('basicvsr')
    with torch.no_grad():
        want = torch.cat([net(lqs[:, a:b]) for a, b in chunk_spans(lqs.size(1), 4, 1)], dim=1)
    torch.testing.assert_close(_run(net, lqs, mode='chunks', chunk=4), want, rtol=0, atol=0)


def test_stream_refuses_training_mode_and_unknown_modes():
    net, lqs = _net('basicvsr')
    with pytest.raises(ValueError, match='mode: expected one of'):
        next(stream(net, _reader(lqs), lqs.size(1), mode='fast'))
    net.train()
    with pytest.raises(ValueError, match='eval mode'):
        next(stream(net, _reader(lqs), lqs.size(1)))


def test_user_network_window_pass_reproduces_its_long_pass():
    """The engine gives a user's network the propagation protocol: windows from borders are exact."""
    net, lqs = _net('user')
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
        window = net(lqs[:, 3:6], init_states=states.window(3, 3))
    torch.testing.assert_close(window, full[:, 3:6], rtol=0, atol=1e-10)


@pytest.mark.parametrize('size, tile, overlap', [(100, 96, 44), (1000, 200, 20), (50, 64, 8), (300, 64, 0)])
def test_tile_spans_cover_the_frame_with_context(size, tile, overlap):
    from lrti_plugin.archs.streaming import tile_spans

    spans = tile_spans(size, tile, overlap)
    assert spans[0][2] == 0 and spans[-1][3] == size and all(a[3] == b[2] for a, b in zip(spans, spans[1:]))
    for start, stop, core_start, core_stop in spans:
        assert stop - start == min(tile, size) and start <= core_start < core_stop <= stop
        assert core_start - start >= min(overlap, core_start) and stop - core_stop >= min(overlap, size - core_stop)


def test_tiles_with_overlap_beyond_the_receptive_field_equal_the_untiled_stream():
    from lrti_plugin.archs.streaming import stream_tiled

    net, _ = _net('basicvsr')
    lqs = random_clip(1, 3, 80, 80, torch.float64, seed=4)
    with torch.no_grad():  # 20 px covers this tiny net's receptive field over 3 frames; 2 x 2 tiles
        whole = net(lqs)
        tiled = torch.cat([sr for _, sr in stream_tiled(net, _reader(lqs), 3, (60, 60), 20, 'exact', chunk=2)], 1)
        seams = torch.cat([sr for _, sr in stream_tiled(net, _reader(lqs), 3, (40, 40), 0, 'exact', chunk=2)], 1)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-10)
    assert (seams - whole).abs().max() > 1e-4  # no context: the seams show (the check above has teeth)


def test_flows_run_in_float32_under_autocast():
    net, lqs = _net('lrtivsr')
    net = net.float()
    seen = []
    net.spynet.register_forward_hook(lambda m, inp, out: seen.append((inp[0].dtype, out.dtype)))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = net(lqs.float())
    with torch.no_grad():
        ref = net(lqs.float())
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    assert (out.float() - ref).abs().mean() < 0.02  # the rest ran in bfloat16, close to float32


@pytest.mark.parametrize('kind, mode', [('basicvsr', 'exact'), ('user', 'exact'), ('basicvsr', 'lookahead'),
                                        ('basicvsr', 'chunks'), ('basicvsr', 'whole')])
def test_progress_counts_every_sweep(kind, mode):
    from lrti_plugin.archs.streaming import sweeps

    net, lqs = _net(kind)
    counts = []
    with torch.no_grad():
        list(stream(net, _reader(lqs), lqs.size(1), mode, chunk=3, lookahead=2, progress=counts.append))
    passes = {'basicvsr': 2, 'user': 3}[kind] if mode == 'exact' else 1  # the user net's last branch is backward
    assert sweeps(net, mode) == passes and sum(counts) == lqs.size(1) * passes
