"""scripts/estimate_memory.py: the memory estimator on every shipped options file, and what it counts."""
import sys

import pytest
import torch
from conftest import REPO

from lrti_plugin.utils.memory import GIB, LiveTensorBytes, saved_bytes

sys.path.insert(0, str(REPO / 'scripts'))
import estimate_memory  # noqa: E402

BUDGET_GIB = 40.0  # every shipped recipe must fit a 40 GB GPU as shipped


@pytest.mark.parametrize('name', sorted(p.name for p in (REPO / 'options').glob('*.yml')))
def test_every_shipped_options_file_fits_a_40gb_gpu(name):
    result = estimate_memory.estimate(str(REPO / 'options' / name), 100, (180, 320))
    assert 0 < result['predicted_peak'] <= BUDGET_GIB * GIB, (name, result['predicted_peak'] / GIB)
    if result['kind'] == 'training':
        assert result['saved_per_frame'] > 0


def test_saved_bytes_counts_each_storage_once_and_checkpointing_saves_less():
    x = torch.empty(64, 64, device='meta', requires_grad=True)
    w = torch.empty(64, 64, device='meta', requires_grad=True)
    # x @ w saves both operands (2 x 16 KiB); tanh saves its output (16 KiB); x is saved once more by the add
    assert saved_bytes(lambda: torch.tanh(x @ w) + x * 2) == 3 * 64 * 64 * 4
    assert saved_bytes(lambda: (x * 3).sum()) == 0  # a product by a constant saves nothing

    from lrti_plugin.archs.ritb_arch import RITB
    block = RITB(num_feat=16, num_heads=2, window_size=4).to('meta')
    args = [torch.empty(1, 16, 8, 8, device='meta', requires_grad=True) for _ in range(3)]
    full = saved_bytes(lambda: block(*args))
    block.use_checkpoint = True
    assert 0 < saved_bytes(lambda: block(*args)) < full / 4


def test_live_bytes_frees_dead_tensors_and_keeps_the_high_water_mark():
    with LiveTensorBytes() as live:
        a = torch.empty(1024, device='meta') + 1  # 4 KiB
        b = a * 2  # 4 KiB more
        del a, b
        c = torch.empty(256, device='meta') + 1  # 1 KiB
    assert live.peak == 8192 and live.live == 1024 and live.largest == 4096
    del c


def test_the_last_line_is_the_prediction_and_over_budget_exits_1(capsys):
    path = str(REPO / 'options' / 'train_demo.yml')
    assert estimate_memory.main(['-opt', path]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith('predicted peak per GPU: ') and last.endswith(' GiB')
    assert estimate_memory.main(['-opt', path, '--budget-gib', '0.001']) == 1
