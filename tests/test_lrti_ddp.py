"""The LRTI strategy under real 2-process DDP (torchrun, gloo, CPU): equal to one process on the union batch.

Each rank trains on its own long clip (the long pass bypasses the DDP wrapper, the window pass goes through
it). Data-parallel training must then be the same computation as one process on both samples: after every
iteration the ranks hold identical weights, and the last gradients, averaged by DDP, equal those of a single
process that starts from rank 0's initial weights and trains on the two-sample batch.
"""
import pytest
import torch
from conftest import REPO, run_module
from test_lrti_strategy import long_batch, lrti_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('mode', ['batch', 'sequential'])
def test_two_rank_ddp_equals_one_process_on_the_union_batch(tmp_path, mode):
    if torch.cuda.is_available():
        pytest.skip('this case checks the CPU (gloo) path')
    port = 29531 if mode == 'batch' else 29532
    proc = run_module('torch.distributed.run', ['--nproc_per_node=2', f'--master_port={port}',
                                                str(REPO / 'tests' / '_ddp_lrti_worker.py'), str(tmp_path), mode],
                      tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in range(2)]
    assert ranks[0]['init'].keys() == ranks[1]['init'].keys()
    for key in ranks[0]['params']:
        assert torch.equal(ranks[0]['init'][key], ranks[1]['init'][key]), f'initial {key} differs between ranks'
        assert torch.equal(ranks[0]['params'][key], ranks[1]['params'][key]), f'{key} out of sync after training'
    assert any(not torch.equal(ranks[0]['init'][k], v) for k, v in ranks[0]['params'].items()), 'nothing trained'

    from _ddp_lrti_worker import ITERS, OVERRIDES

    single = lrti_model(tmp_path / 'single', torch.device('cpu'), {'mode': mode}, overrides=OVERRIDES)
    single.net_g.load_state_dict(ranks[0]['init'])
    for it in range(1, ITERS + 1):
        single.feed_data(long_batch())
        single.optimize_parameters(current_iter=it)
    grads = {n: p.grad for n, p in single.net_g.named_parameters() if p.grad is not None}
    assert grads.keys() == ranks[0]['grads'].keys()
    for name, grad in grads.items():
        torch.testing.assert_close(ranks[0]['grads'][name], grad, rtol=1e-3, atol=1e-6)
    for key, value in single.net_g.state_dict().items():
        torch.testing.assert_close(ranks[0]['params'][key], value, rtol=1e-4, atol=1e-6)
