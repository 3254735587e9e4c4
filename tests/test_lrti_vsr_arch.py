"""LRTIVSR: shapes, gradients, options, input checks, and the exactness of window passes.

Set ``LRTI_TEST_DEVICE`` (e.g. to an accelerator's device string) to run the forward tests there; default CPU.
"""
import os

import pytest
import torch
import yaml
from _exactness import (
    assert_batched_windows_exact,
    assert_chained_window_exact,
    assert_gradient_reaches_every_parameter,
    assert_states_matter,
    assert_states_only_matches,
    assert_window_exact,
    random_clip,
)
from _flow_stub import use_tiny_flow

import lrti_plugin  # noqa: F401  (registers the archs; shim before basicsr)
from lrti_plugin.archs.lrti_vsr_arch import BRANCHES, LRTIVSR
from lrti_plugin.state import BoundaryStates

DEVICE = torch.device(os.environ.get('LRTI_TEST_DEVICE', 'cpu'))
TINY = dict(num_feat=16, num_heads=2, window_size=4, num_groups=1, depth=2, mlp_ratio=2.0, mid_channels=16,
            num_extract_block=1, drop_path_rate=0.0)
PAPER = dict(num_feat=120, num_heads=6, window_size=8, num_groups=4, depth=6, mid_channels=64)
TINY_YAML = """
network_g:
  type: LRTIVSR
  num_feat: 16
  num_heads: 2
  window_size: 4
  num_groups: 2
  depth: 2
  mlp_ratio: 2
  attn: relu2
  ffn: gated
  gate_act: sigmoid
  mid_channels: 16
  num_extract_block: 1
  spynet_path: ~
  drop_path_rate: 0.1
"""


def _net(dtype=torch.float64, seed=0, tiny_flow=True, **kwargs):
    """The tiny net in eval mode; ``tiny_flow`` swaps SpyNet for tests/_flow_stub.py's cheap per-pair flow."""
    torch.manual_seed(seed)
    net = LRTIVSR(**{**TINY, **kwargs})
    if tiny_flow:
        use_tiny_flow(net)
    return net.to(DEVICE, dtype).eval()


def _clip(b=1, t=6, h=33, w=35, dtype=torch.float64):
    return random_clip(b, t, h, w, dtype, device=DEVICE)


def _num_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope='module')
def long_pass():
    """(net, lqs, full output, states) of one float64 eval pass over 6 frames."""
    net = _net()
    lqs = _clip(b=1, t=6)
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
    return net, lqs, full, states


def test_build_network_from_yaml():
    from basicsr.archs import build_network  # after lrti_plugin: basicsr needs its shim

    opt = yaml.safe_load(TINY_YAML)['network_g']
    net = build_network(opt)
    assert isinstance(net, LRTIVSR)
    assert opt['type'] == 'LRTIVSR'  # the options are not consumed
    assert len(net.body['forward_2']) == 2 and len(net.body['forward_2'][0].blocks) == 2
    assert net.body['forward_2'][0].blocks[0].ffn.gate_act == 'sigmoid'


@pytest.mark.parametrize('h,w,window_size', [(33, 35, 4), (37, 34, 8)])
def test_output_shape_any_size(h, w, window_size):
    net = _net(torch.float32, window_size=window_size)
    with torch.no_grad():
        out, states = net(_clip(b=2, t=2, h=h, w=w, dtype=torch.float32), return_states=True)
    assert out.shape == (2, 2, 3, 4 * h, 4 * w)
    assert set(states.feats) == set(BRANCHES) and states.order == 2
    assert all(v.shape == (2, 2, 16, h, w) for v in states.feats.values())
    assert torch.isfinite(out).all()


def test_single_frame():
    net = _net(torch.float32)
    with torch.no_grad():
        out = net(_clip(b=1, t=1, dtype=torch.float32))
    assert out.shape == (1, 1, 3, 132, 140)


def test_gradient_reaches_every_parameter():
    net = _net(torch.float32, tiny_flow=False)
    assert_gradient_reaches_every_parameter(net, _clip(t=3, h=33, w=33, dtype=torch.float32))


def test_drop_path_linear_and_off_in_eval():
    net = _net(torch.float32, num_groups=2, drop_path_rate=0.3)
    blocks = [blk for group in net.body['backward_1'] for blk in group.blocks]
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)
    assert [blk.drop_path.drop_prob for blk in blocks[1:]] == pytest.approx([0.1, 0.2, 0.3])
    ref = _net(torch.float32, num_groups=2, drop_path_rate=0.0)
    ref.load_state_dict(net.state_dict())
    lqs = _clip(b=2, t=1, dtype=torch.float32)  # one frame: no flows, cheap
    with torch.no_grad():
        torch.testing.assert_close(net(lqs), ref(lqs), rtol=0, atol=0)
        net.train()
        assert not torch.equal(net(lqs), ref(lqs))


def test_checkpointing_gives_same_output_and_gradients():
    net = _net(torch.float64)
    ckpt = _net(torch.float64, use_checkpoint=True)
    ckpt.load_state_dict(net.state_dict())
    lqs = _clip(t=1)
    grads = []
    for model in (net, ckpt):
        model.train()
        model(lqs).sum().backward()
        grads.append([p.grad for p in model.body.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize('start,length', [(0, 3), (2, 2), (3, 3), (5, 1), (0, 6)])
def test_window_pass_reproduces_long_pass_float64(long_pass, start, length):
    assert_window_exact(*long_pass, start, length)


def test_batched_windows_of_mixed_borders(long_pass):
    assert_batched_windows_exact(*long_pass, [0, 1, 2, 4], 2, (0, 1, 2, 2), (2, 2, 2, 0))


def test_chained_record_keeps_outside_context(long_pass):
    assert_chained_window_exact(*long_pass, outer=(2, 3), inner=(1, 2))


def test_zero_start_differs_from_injected_states(long_pass):
    net, lqs, full, _ = long_pass
    assert_states_matter(net, lqs, full, 2, 2)


def test_states_only_skips_the_reconstruction(long_pass):
    net, lqs, _, states = long_pass
    assert_states_only_matches(net, lqs)
    assert_states_only_matches(net, lqs[:, 2:5], init_states=states.window(2, 3))


def test_window_pass_float32_real_spynet():
    net = _net(torch.float32, tiny_flow=False)
    lqs = _clip(t=5, dtype=torch.float32)
    with torch.no_grad():
        full, states = net(lqs, return_states=True)
    assert_window_exact(net, lqs, full, states, 2, 2, atol=1e-5)


@pytest.mark.parametrize('key,value', [
    ('num_feat', 0), ('num_heads', 3), ('window_size', 0), ('num_groups', 0), ('depth', 0), ('mlp_ratio', 0),
    ('attn', 'linear'), ('ffn', 'glu'), ('gate_act', 'tanh'), ('mid_channels', 0), ('num_extract_block', -1),
    ('use_checkpoint', 'yes'), ('drop_path_rate', 1.0), ('num_groups', 2.0), ('spynet_path', 3)])
def test_bad_option_names_key(key, value):
    with pytest.raises(ValueError, match=key):
        LRTIVSR(**{**TINY, key: value})


def test_attn_norm_needs_relu2_and_typos_are_not_swallowed():
    with pytest.raises(ValueError, match='attn_norm'):
        LRTIVSR(**TINY, attn='softmax', attn_norm=True)
    with pytest.raises(TypeError):
        LRTIVSR(**TINY, num_feats=16)


def test_missing_spynet_path_raises_file_not_found(tmp_path):
    missing = str(tmp_path / 'nope' / 'spynet.pth')
    with pytest.raises(FileNotFoundError, match='nope'):
        LRTIVSR(**TINY, spynet_path=missing)


@pytest.mark.parametrize('shape', [(1, 2, 3, 32, 40), (1, 2, 3, 40, 32)])
def test_too_small_input_raises_value_error_naming_shape(shape):
    net = _net(torch.float32, tiny_flow=False)
    with pytest.raises(ValueError, match=r'33.*' + str(tuple(shape)).replace('(', r'\(').replace(')', r'\)')):
        net(torch.rand(*shape, device=DEVICE))


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match='B, T, 3, H, W'):
        _net(torch.float32)(torch.rand(2, 3, 40, 40, device=DEVICE))


def test_mismatched_init_states_raise():
    net = _net(torch.float32)
    lqs = _clip(t=2, dtype=torch.float32)
    zeros = lqs.new_zeros(1, 2, 3, 33, 35)
    feats = {name: lqs.new_zeros(1, 2, 16, 33, 35) for name in ('backward', 'forward')}
    with pytest.raises(ValueError, match='branches'):
        net(lqs, init_states=BoundaryStates(feats, zeros, zeros, (2, ), (2, )))
    feats = {name: lqs.new_zeros(1, 2, 8, 33, 35) for name in BRANCHES}
    with pytest.raises(ValueError, match='backward_1'):
        net(lqs, init_states=BoundaryStates(feats, zeros, zeros, (2, ), (2, )))


def test_paper_scale_parameter_count_is_machine_independent(monkeypatch):
    count = _num_params(LRTIVSR(**PAPER))
    assert 15e6 <= count <= 18e6, count
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert _num_params(LRTIVSR(**PAPER)) == count
