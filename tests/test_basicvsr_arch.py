"""LRTIBasicVSR: BasicSR compatibility, gradients, input checks, and the exactness of window passes."""
import pytest  # noqa: I001  (lrti_plugin must be imported before basicsr: torchvision shim)
import torch
from _exactness import (
    assert_batched_windows_exact,
    assert_chained_window_exact,
    assert_gradient_reaches_every_parameter,
    assert_states_matter,
    assert_states_only_matches,
    assert_window_exact,
    long_pass,
    random_clip,
)
from _flow_stub import use_tiny_flow

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from basicsr.archs.basicvsr_arch import BasicVSR
from basicsr.utils.registry import ARCH_REGISTRY
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
from lrti_plugin.state import BoundaryStates

TINY = dict(num_feat=8, num_block=1)


def _pair(dtype=torch.float64, seed=0, tiny_flow=True):
    """BasicSR's BasicVSR and ours with the same weights; ``tiny_flow`` swaps SpyNet for a cheap
    per-pair flow net (see tests/_flow_stub.py) in both."""
    torch.manual_seed(seed)
    ref = BasicVSR(**TINY).to(dtype).eval()
    net = LRTIBasicVSR(**TINY).to(dtype).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    if tiny_flow:
        use_tiny_flow(ref, net)
    return ref, net


def _clip(b=1, t=6, dtype=torch.float64):
    return random_clip(b, t, 33, 35, dtype)


def test_registered_and_built_from_yaml_keys():
    net = ARCH_REGISTRY.get('LRTIBasicVSR')(num_feat=8, num_block=2, spynet_path=None)
    assert isinstance(net, LRTIBasicVSR)
    assert len(net.forward_trunk.main[2]) == 2


def test_same_parameter_names_and_checkpoint_loads_both_ways(tmp_path):
    ref, net = _pair(torch.float32, tiny_flow=False)
    assert list(ref.state_dict()) == list(net.state_dict())
    path = tmp_path / 'basicvsr.pth'
    torch.save({'params': ref.state_dict()}, path)
    fresh = LRTIBasicVSR(**TINY)
    fresh.load_state_dict(torch.load(path)['params'], strict=True)
    back = BasicVSR(**TINY)
    back.load_state_dict(fresh.state_dict(), strict=True)
    for k, v in back.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k


def test_output_equals_basicsr_basicvsr():
    ref, net = _pair(tiny_flow=False)
    lqs = _clip(b=2, t=3)
    with torch.no_grad():
        expected = ref(lqs)
        got = net(lqs)
    assert got.shape == (2, 3, 3, 4 * 33, 4 * 35)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = LRTIBasicVSR(**TINY)
    assert_gradient_reaches_every_parameter(net, _clip(t=3, dtype=torch.float32))


@pytest.mark.parametrize('shape', [(1, 3, 3, 32, 40), (1, 3, 3, 40, 32)])
def test_too_small_input_raises_value_error_naming_shape(shape):
    net = LRTIBasicVSR(**TINY)
    with pytest.raises(ValueError, match=r'33.*' + str(tuple(shape)).replace('(', r'\(').replace(')', r'\)')):
        net(torch.rand(*shape))


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match='B, T, 3, H, W'):
        LRTIBasicVSR(**TINY)(torch.rand(3, 3, 40, 40))


def test_missing_spynet_path_raises_file_not_found(tmp_path):
    missing = str(tmp_path / 'nope' / 'spynet.pth')
    with pytest.raises(FileNotFoundError, match='nope'):
        LRTIBasicVSR(**TINY, spynet_path=missing)


def test_bad_constructor_value_names_key():
    with pytest.raises(ValueError, match='num_feat'):
        LRTIBasicVSR(num_feat=0)
    with pytest.raises(TypeError):
        LRTIBasicVSR(num_feats=8)  # a typo is not swallowed


@pytest.mark.parametrize('start,length', [(0, 3), (2, 2), (4, 3), (0, 7), (6, 1)])
def test_window_pass_reproduces_long_pass_float64(start, length):
    _, net = _pair()
    lqs = _clip(b=2, t=7)
    assert_window_exact(net, lqs, *long_pass(net, lqs), start, length)


def test_window_pass_float32_real_spynet():
    _, net = _pair(torch.float32, tiny_flow=False)
    lqs = _clip(t=6, dtype=torch.float32)
    assert_window_exact(net, lqs, *long_pass(net, lqs), 2, 3, atol=1e-5)


def test_zero_start_differs_from_injected_states():
    """The injected states matter: a plain short pass does not reproduce the long pass."""
    _, net = _pair()
    lqs = _clip(t=6)
    assert_states_matter(net, lqs, long_pass(net, lqs)[0], 2, 2)


def test_batched_windows_of_mixed_borders():
    _, net = _pair()
    lqs = _clip(b=1, t=6)
    assert_batched_windows_exact(net, lqs, *long_pass(net, lqs), [0, 2, 4], 2, (0, 1, 1), (1, 1, 0))


def test_chained_record_keeps_outside_context():
    """A window cut from a pass that itself started from borders still sees the frames outside it."""
    _, net = _pair()
    lqs = _clip(t=8)
    assert_chained_window_exact(net, lqs, *long_pass(net, lqs), outer=(2, 4), inner=(0, 2))


def test_mismatched_init_states_raise():
    _, net = _pair()
    lqs = _clip(t=4)
    with torch.no_grad():
        _, states = net(lqs, return_states=True)
    init = states.window(1, 2)
    with pytest.raises(ValueError, match='init_states'):
        net(lqs[:, 1:3, ..., :34], init_states=init)
    bad = BoundaryStates({'forward': init.feats['forward']}, init.lqs_before, init.lqs_after, init.num_before,
                         init.num_after)
    with pytest.raises(ValueError, match='branches'):
        net(lqs[:, 1:3], init_states=bad)


def test_states_only_skips_the_reconstruction():
    _, net = _pair()
    lqs = _clip(t=5)
    assert_states_only_matches(net, lqs)
    assert_states_only_matches(net, lqs[:, 1:4], init_states=long_pass(net, lqs)[1].window(1, 3))
