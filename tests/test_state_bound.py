"""The state bound (``state_max_rms``): a recurrence that grows past its training length is held at a chosen
root-mean-square, windows still reproduce the long pass, and a bound above the states changes nothing."""
import pytest  # noqa: I001  (lrti_plugin must be imported before basicsr: torchvision shim)
import torch
from _exactness import assert_window_exact, long_pass, random_clip
from _flow_stub import use_tiny_flow

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from basicsr.utils.registry import ARCH_REGISTRY
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
from lrti_plugin.archs.propagation_util import bound_rms

BOUND = 0.5


def _rms(x):
    return x.pow(2).flatten(1).mean(1).sqrt()


def _growing_net(state_max_rms=None, seed=0):
    """A tiny LRTIBasicVSR whose recurrence amplifies its state at every step (first trunk conv x8), as a
    network trained on short clips may learn to: its states grow along a clip."""
    torch.manual_seed(seed)
    net = LRTIBasicVSR(num_feat=8, num_block=1, state_max_rms=state_max_rms).double().eval()
    use_tiny_flow(net)
    with torch.no_grad():
        for trunk in (net.backward_trunk, net.forward_trunk):
            trunk.main[0].weight.mul_(8.0)
    return net


def _clip(t=10):
    return random_clip(1, t, 33, 35, torch.float64)


def _states(net, lqs):
    """The PropagationStates of one no-grad pass, without the (costly) reconstruction."""
    with torch.no_grad():
        return net(lqs, states_only=True)


def test_bound_rms_scales_only_the_samples_above_it():
    x = torch.stack([torch.full((2, 3, 3), 0.1), torch.full((2, 3, 3), 3.0), torch.zeros(2, 3, 3)])
    y = bound_rms(x, BOUND)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])  # within the bound (zeros too): untouched
    torch.testing.assert_close(_rms(y[1:2]), torch.tensor([BOUND]))
    torch.testing.assert_close(y[1] / x[1], torch.full((2, 3, 3), BOUND / 3.0))  # direction kept


def test_unbounded_recurrence_grows_and_the_bound_holds_it():
    lqs = _clip()
    free = _states(_growing_net(), lqs)
    held = _states(_growing_net(BOUND), lqs)
    for name in ('backward', 'forward'):
        grown = _rms(free.feats[name][0])
        assert grown.max() > 20 * BOUND  # the test network does blow up without the bound
        bounded = _rms(held.feats[name][0])
        assert bounded.max() <= BOUND * (1 + 1e-9)
        assert bounded.max() >= BOUND * (1 - 1e-9)  # and the bound is what holds it


def test_bound_above_every_state_changes_nothing():
    lqs = _clip(t=3)
    with torch.no_grad():
        free = _growing_net()(lqs)
        loose = _growing_net(1e30)(lqs)
    assert torch.equal(free, loose)


def test_window_pass_reproduces_bounded_long_pass():
    net = _growing_net(BOUND)
    lqs = _clip(t=9)  # both branches are held at the bound inside the window
    assert_window_exact(net, lqs, *long_pass(net, lqs), 5, 3)  # borders on both sides


def test_bound_states_switches_a_built_network_and_none_turns_it_off():
    lqs = _clip()
    net = _growing_net()
    free = _states(net, lqs)
    held = _states(net.bound_states(BOUND), lqs)
    off = _states(net.bound_states(None), lqs)
    assert _rms(held.feats['forward'][0]).max() <= BOUND * (1 + 1e-9)
    assert torch.equal(off.feats['forward'], free.feats['forward'])


@pytest.mark.parametrize('arch,kwargs', [
    ('LRTIBasicVSR', dict(num_feat=8, num_block=1)),
    ('LRTIBasicVSRPP', dict(mid_channels=8, num_blocks=1)),
    ('LRTIVSR', dict(num_feat=8, num_heads=2, window_size=4, num_groups=1, depth=1, mid_channels=8,
                     num_extract_block=1)),
])
@pytest.mark.parametrize('bad', [0, -1.0, 'big', float('nan'), True])
def test_every_arch_takes_the_option_and_names_a_bad_value(arch, kwargs, bad):
    cls = ARCH_REGISTRY.get(arch)
    assert cls(**kwargs, state_max_rms=0.25).state_max_rms == 0.25
    with pytest.raises(ValueError, match='state_max_rms'):
        cls(**kwargs, state_max_rms=bad)
