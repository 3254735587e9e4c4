"""lrti_plugin.utils.checkpoint and LRTIModel.load_network: every bad checkpoint is one line naming the file."""
import pytest
import torch
from test_lrti_model import build_model

from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR, build_spynet
from lrti_plugin.archs.basicvsrpp_arch import LRTIBasicVSRPP
from lrti_plugin.utils.checkpoint import load_weights


def _save(tmp_path, name, net, key='params', prefix=''):
    path = tmp_path / name
    torch.save({key: {prefix + k: v for k, v in net.state_dict().items()}}, path)
    return str(path)


def _one_line(err) -> str:
    text = str(err.value)
    assert '\n' not in text
    return text


def test_truncated_checkpoint_names_the_file(tmp_path):
    good = _save(tmp_path, 'good.pth', LRTIBasicVSR(8, 1))
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(open(good, 'rb').read()[:1000])
    with pytest.raises(ValueError) as err:
        load_weights(LRTIBasicVSR(8, 1), str(bad))
    assert _one_line(err).startswith(f'checkpoint {bad}: unreadable (')


def test_another_width_is_one_line_with_the_shapes(tmp_path):
    path = _save(tmp_path, 'w8.pth', LRTIBasicVSR(8, 1))
    with pytest.raises(ValueError) as err:
        load_weights(LRTIBasicVSR(16, 1), path)
    text = _one_line(err)
    assert text.startswith(f'checkpoint {path}: ') and 'tensors of another shape' in text
    assert text.endswith('wrong arch or width?')
    assert ') vs (16, ' in text and ': (8, ' not in text  # 'checkpoint (8, ...) vs network (16, ...)'
    assert '(8, ' in text


def test_another_arch_counts_missing_and_unexpected_keys(tmp_path):
    path = _save(tmp_path, 'pp.pth', LRTIBasicVSRPP(mid_channels=8, num_blocks=1))
    net = LRTIBasicVSR(8, 1)
    with pytest.raises(ValueError) as err:
        load_weights(net, path)
    text = _one_line(err)
    own = set(net.state_dict())
    theirs = set(LRTIBasicVSRPP(mid_channels=8, num_blocks=1).state_dict())
    assert f'{len(own - theirs)} missing / {len(theirs - own)} unexpected keys (first 3 missing: ' in text
    assert text.endswith('wrong arch or width?')


def test_ddp_prefix_and_params_fallback_load(tmp_path):
    src = LRTIBasicVSR(8, 1)
    path = _save(tmp_path, 'ddp.pth', src, key='params', prefix='module.')
    dst = LRTIBasicVSR(8, 1)
    load_weights(dst, path, param_key='params_ema')  # absent: BasicSR's rule falls back to params
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_truncated_spynet_names_its_option_and_file(tmp_path):
    bad = tmp_path / 'spynet.pth'
    torch.save({'params': build_spynet(None).state_dict()}, bad)
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(ValueError, match=f'checkpoint {bad}: unreadable'):
        build_spynet(str(bad))


def test_model_pretrain_of_another_width_fails_in_one_line(tiny_data, tmp_path, device):
    path = _save(tmp_path, 'w16.pth', LRTIBasicVSR(16, 1))
    with pytest.raises(ValueError) as err:
        build_model(tiny_data, tmp_path, device, {'path.pretrain_network_g': path})  # tiny options: 8 channels
    assert _one_line(err).startswith(f'checkpoint {path}: ') and 'wrong arch or width?' in str(err.value)
    model = build_model(tiny_data, tmp_path, device, {'path.pretrain_network_g': path, 'path.strict_load_g': False})
    assert model.net_g is not None  # non-strict: BasicSR's behaviour (tensors of another shape are skipped)


def test_a_basicsr_spynet_file_loads_strictly_on_its_layers(tmp_path):
    """BasicSR's SpyNet files (and get_weights.py's) hold ``basic_module.*`` only: ``mean``/``std`` are constants."""
    torch.manual_seed(3)
    source = build_spynet(None)
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / 'spynet.pth'
    torch.save({'params': {k: v for k, v in source.state_dict().items() if k.startswith('basic_module.')}}, path)
    loaded = build_spynet(str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.save({'params': {k: v for k, v in source.state_dict().items() if k.startswith('basic_module.0')}}, path)
    with pytest.raises(ValueError, match='missing'):
        build_spynet(str(path))
