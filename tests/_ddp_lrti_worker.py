"""One rank of a 2-process gloo DDP run of the LRTI strategy (launched by tests/test_lrti_ddp.py via torchrun).

Rank r trains on sample r of :data:`test_lrti_strategy.STARTS` (its own long clip and window starts) for
``ITERS`` iterations, the DDP-wrapped window pass taking the gradient all-reduce, then writes its initial
weights, final weights and last gradients to ``<out>/rank<r>.pt`` for the test to compare.

Usage: torchrun --nproc_per_node=2 tests/_ddp_lrti_worker.py OUT MODE
"""
import sys
from pathlib import Path

import torch
from test_lrti_strategy import long_batch, lrti_model
from torch import distributed as dist

ITERS = 2
# Adam with a large eps steps by about lr * grad (not lr * sign(grad)), so float rounding in near-zero
# gradients cannot flip steps and the one-process reference can be compared tightly.
OVERRIDES = {'train.optim_g.lr': 1e-2, 'train.optim_g.eps': 1.0}


def batch_of_rank(rank: int, device) -> dict:
    """Sample ``rank`` of the two-sample batch ``long_batch(STARTS)`` (the test rebuilds the whole batch)."""
    data = long_batch(device=device)
    return {k: v[rank:rank + 1] for k, v in data.items()}


def main(out: Path, mode: str) -> None:
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    device = torch.device('cpu')
    model = lrti_model(out / f'exp{rank}', device, {'mode': mode}, overrides=OVERRIDES)
    model.opt['dist'] = True
    model.net_g = model.model_to_device(model.net_g)  # DDP broadcasts rank 0's weights
    init = {k: v.clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()}
    for it in range(1, ITERS + 1):
        model.feed_data(batch_of_rank(rank, device))
        model.optimize_parameters(current_iter=it)
    bare = model.get_bare_model(model.net_g)
    torch.save({'init': init, 'params': bare.state_dict(),
                'grads': {n: p.grad for n, p in bare.named_parameters() if p.grad is not None},
                'loss': float(model.log_dict['l_pix'])}, out / f'rank{rank}.pt')
    dist.destroy_process_group()


if __name__ == '__main__':
    main(Path(sys.argv[1]), sys.argv[2])
