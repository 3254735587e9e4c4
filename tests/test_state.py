"""PropagationStates / BoundaryStates: slicing, counts, batching, device/dtype moves, memory."""
import pytest
import torch

from lrti_plugin.state import BoundaryStates, PropagationStates, cat_states, is_backward_branch


def _record(b=2, length=6, order=2, c=4, h=3, w=5):
    """Features whose value encodes (sample, frame, branch) so slices can be checked exactly."""
    frame = torch.arange(length, dtype=torch.float64).view(1, length, 1, 1, 1)
    sample = torch.arange(b, dtype=torch.float64).view(b, 1, 1, 1, 1) * 100
    feats = {name: (frame + sample + 1000 * k).expand(b, length, c, h, w).clone()
             for k, name in enumerate(['backward_1', 'forward_1', 'backward_2', 'forward_2'])}
    lqs = (frame + sample).expand(b, length, 3, h, w).clone()
    return PropagationStates(feats, lqs, order)


def test_branch_direction_rule():
    assert is_backward_branch('backward_2') and is_backward_branch('backward')
    assert not is_backward_branch('forward_1') and not is_backward_branch('fusion')


@pytest.mark.parametrize('start,length,before,after', [(0, 2, 0, 2), (1, 2, 1, 2), (2, 2, 2, 2), (3, 2, 2, 1),
                                                       (4, 2, 2, 0), (0, 6, 0, 0)])
def test_window_slices_the_frames_just_outside(start, length, before, after):
    rec = _record()
    win = rec.window(start, length)
    assert win.num_before == (before, before) and win.num_after == (after, after)
    assert win.order == 2 and win.batch_size == 2
    for j, frame in enumerate(range(start - 2, start)):  # forward branches, time order, last = s-1
        expect = frame + 1000 if frame >= 0 else 0.0
        assert win.feats['forward_1'][0, j, 0, 0, 0].item() == expect
        assert win.lqs_before[1, j, 0, 0, 0].item() == (frame + 100 if frame >= 0 else 0.0)
    for j, frame in enumerate(range(start + length, start + length + 2)):  # backward branches, first = s+T
        expect = frame + 2000 if frame < 6 else 0.0
        assert win.feats['backward_2'][0, j, 0, 0, 0].item() == expect
        assert win.lqs_after[0, j, 0, 0, 0].item() == (frame if frame < 6 else 0.0)


def test_window_copies_so_the_record_can_be_freed():
    rec = _record()
    win = rec.window(2, 2)
    win.feats['forward_1'].zero_()
    assert rec.feats['forward_1'][0, 1, 0, 0, 0].item() == 1001


@pytest.mark.parametrize('start,length', [(-1, 2), (5, 2), (0, 0), (0, 7)])
def test_window_outside_the_clip_raises(start, length):
    with pytest.raises(ValueError, match='outside'):
        _record().window(start, length)


def test_cat_batches_along_b_with_per_sample_counts():
    rec = _record()
    init = cat_states([rec.window(0, 2), rec.window(4, 2)])
    assert init.batch_size == 4
    assert init.num_before == (0, 0, 2, 2) and init.num_after == (2, 2, 0, 0)
    assert torch.equal(init.feats['forward_2'][2:], rec.window(4, 2).feats['forward_2'])
    assert torch.equal(rec.windows([0, 4], 2).lqs_after, init.lqs_after)


def test_cat_rejects_mismatched_branches():
    a = _record().window(1, 2)
    b = BoundaryStates({'forward': a.feats['forward_1']}, a.lqs_before, a.lqs_after, a.num_before, a.num_after)
    with pytest.raises(ValueError, match='branches'):
        BoundaryStates.cat([a, b])
    with pytest.raises(ValueError, match='no states'):
        BoundaryStates.cat([])


def test_detach_to_and_nbytes():
    rec = _record()
    feats = {k: v.clone().requires_grad_() for k, v in rec.feats.items()}
    rec = PropagationStates(feats, rec.lqs, rec.order)
    assert rec.window(2, 2).feats['forward_1'].requires_grad
    det = rec.detach()
    assert not any(v.requires_grad for v in det.feats.values())
    assert not det.window(2, 2).detach().feats['forward_1'].requires_grad
    half = det.to(torch.float32)
    assert half.lqs.dtype == torch.float32 and half.feats['backward_1'].dtype == torch.float32
    assert half.nbytes * 2 == det.nbytes == (4 * 2 * 6 * 4 * 15 + 2 * 6 * 3 * 15) * 8
    win = det.window(1, 3).to('cpu', torch.float32)
    assert win.nbytes == (4 * 2 * 2 * 4 * 15 + 2 * 2 * 2 * 3 * 15) * 4


def test_context_fills_windows_touching_the_ends():
    """A record of a pass that started from borders hands those borders on to windows at its ends."""
    full = _record(length=8)
    mid = full.window(2, 4)  # the pass over frames [2, 6) of the long clip
    sub = PropagationStates({k: v[:, 2:6] for k, v in full.feats.items()}, full.lqs[:, 2:6], 2, context=mid)
    for start, length in [(0, 1), (0, 4), (3, 1), (1, 2)]:
        got, expect = sub.window(start, length), full.window(start + 2, length)
        assert got.num_before == expect.num_before and got.num_after == expect.num_after
        for name in got.feats:
            assert torch.equal(got.feats[name], expect.feats[name]), (start, name)
        assert torch.equal(got.lqs_before, expect.lqs_before) and torch.equal(got.lqs_after, expect.lqs_after)
