"""The propagation engine's memory habits: a plain forward pass drops each frame's branch outputs once that
frame is reconstructed (as BasicSR's networks do), and the zero start state is made only where it is used."""
import weakref  # noqa: I001  (lrti_plugin must be imported before basicsr)

import pytest
import torch
from _exactness import random_clip
from _flow_stub import use_tiny_flow

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
from lrti_plugin.archs.basicvsrpp_arch import LRTIBasicVSRPP
from lrti_plugin.archs.lrti_vsr_arch import LRTIVSR

NETS = {
    'basicvsr': lambda: LRTIBasicVSR(num_feat=8, num_block=1),
    'basicvsrpp': lambda: LRTIBasicVSRPP(mid_channels=8, num_blocks=1),
    'lrti_vsr': lambda: LRTIVSR(num_feat=16, num_heads=2, window_size=4, num_groups=1, depth=1, mlp_ratio=2.0,
                                mid_channels=16, num_extract_block=1, drop_path_rate=0.0),
}


def _net(kind):
    torch.manual_seed(0)
    net = NETS[kind]()
    use_tiny_flow(net)
    return net.double().eval()


def _alive_outputs_of_done_frames(net, run):
    """Run ``run()`` while watching ``net.reconstruct``: at each call, how many branch outputs of the frames
    reconstructed before are still alive (tensors are freed by reference counting).
    Returns (result of run, list of counts)."""
    done, counts = [], []
    reconstruct = net.reconstruct

    def watched(lq, frame, feats):
        counts.append(sum(ref() is not None for ref in done))
        done.extend(weakref.ref(f) for f in feats.values())
        return reconstruct(lq, frame, feats)

    net.reconstruct = watched
    try:
        return run(), counts
    finally:
        del net.reconstruct


@pytest.mark.parametrize('kind', sorted(NETS))
def test_plain_forward_drops_outputs_of_reconstructed_frames(kind):
    net = _net(kind)
    size = 64 if kind == 'basicvsrpp' else 33  # BasicVSR++ computes flows at 1/4 size: 64 is its minimum
    lqs = random_clip(1, 7, size, size + 2, torch.float64)
    with torch.no_grad():
        kept, kept_counts = _alive_outputs_of_done_frames(net, lambda: net.propagate(lqs)[1])
        out, counts = _alive_outputs_of_done_frames(net, lambda: net(lqs))
    assert torch.equal(out, kept)
    n_branches = len(net.branches)
    assert kept_counts[-1] == n_branches * 6  # propagate keeps every output (states are built from them)
    # dropped: only the last branch's own history (its K previous outputs) is still alive
    assert max(counts) <= net.order, counts


def test_states_still_come_back_with_the_output():
    net = _net('basicvsr')
    lqs = random_clip(1, 5, 33, 35, torch.float64)
    with torch.no_grad():
        out, states = net(lqs, return_states=True)
        feats, ref = net.propagate(lqs)
    assert torch.equal(out, ref)
    for name in net.branches:
        assert len(feats[name]) == 5 and all(f is not None for f in feats[name])
    assert states.feats['forward'].shape[1] == 5


def test_drop_needs_every_frame_reconstructed():
    net = _net('basicvsr')
    lqs = random_clip(1, 5, 33, 35, torch.float64)
    with pytest.raises(ValueError, match='keep=False'):
        net.propagate(lqs, outputs=3, keep=False)


def test_zero_start_state_made_at_each_branch_start_only(monkeypatch):
    net = _net('basicvsr')
    lqs = random_clip(1, 6, 33, 35, torch.float64)
    calls = []
    new_zeros = torch.Tensor.new_zeros

    def counting(self, *size, **kwargs):
        calls.append(tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size)
        return new_zeros(self, *size, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'new_zeros', counting)
    with torch.no_grad():
        net(lqs)
    state_shape = (1, 8, 33, 35)
    assert calls.count(state_shape) == len(net.branches), calls  # one per branch walk, not one per step
