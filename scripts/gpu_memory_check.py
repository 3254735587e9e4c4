"""One real training iteration of each options file on synthetic data: measured peak memory against the estimator.

    python scripts/gpu_memory_check.py -opt options/train_lrti.yml options/train_lrti_basicvsrpp.yml --json out.json
    python scripts/gpu_memory_check.py -opt options/train_demo.yml --amp bfloat16 float16

For each file (and each ``--amp`` setting: ``none``, ``bfloat16``, ``float16``): ``LRTIModel`` is built from the
file at its real widths (no pretrained weights, no SpyNet file: random weights cost the same), fed one batch of
the file's geometry (random LR frames, long-clip batches with evenly spread windows under ``train.lrti``), and
``optimize_parameters`` runs twice; the peak is ``torch.cuda.max_memory_allocated`` over the second iteration
(Adam's state exists by then), next to ``scripts/estimate_memory.py``'s prediction (float32). Prints a table,
writes JSON, and exits 1 if a float32 measurement exceeds the prediction by more than 10 % or a loss is not
finite. On a machine without CUDA it runs the iterations on the CPU and reports no memory (a smoke run).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import lrti_plugin  # noqa: E402,F401
from lrti_plugin.models.lrti_model import LRTIModel  # noqa: E402
from lrti_plugin.utils.memory import GIB, estimate_training_memory  # noqa: E402
from lrti_plugin.utils.options import load_options  # noqa: E402


def build(path: str, amp: str, device: torch.device, root: str) -> LRTIModel:
    opt = load_options(path)
    opt['network_g'] = {k: v for k, v in opt['network_g'].items() if k != 'spynet_path'}
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'experiments_root': root,
                   'models': root, 'training_states': root, 'log': root, 'visualization': root}
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False,
               num_gpu=1 if device.type == 'cuda' else 0)
    opt['train'].update(use_amp=amp != 'none', **({'amp_dtype': amp} if amp != 'none' else {}))
    opt['train']['fix_flow'] = None
    for phase, ds in opt['datasets'].items():
        ds.update(scale=opt['scale'], phase=phase)
    return LRTIModel(opt)


def batch(opt: dict, device: torch.device) -> dict:
    ds = opt['datasets']['train']
    scale, size, b = opt['scale'], ds['gt_size'] // opt['scale'], ds.get('batch_size_per_gpu', 1)
    g = torch.Generator().manual_seed(0)
    if 'train' in opt and 'lrti' in opt['train']:
        length, t, n = ds['long_frames'], ds['clip_frames'], ds['num_clips']
        starts = [round(i * (length - t) / max(n - 1, 1)) for i in range(n)]
        return {'lq': torch.rand(b, length, 3, size, size, generator=g).to(device),
                'gt': torch.rand(b, n, t, 3, scale * size, scale * size, generator=g).to(device),
                'starts': torch.tensor([starts] * b)}
    t = ds.get('clip_frames', ds.get('num_frame'))
    return {'lq': torch.rand(b, t, 3, size, size, generator=g).to(device),
            'gt': torch.rand(b, t, 3, scale * size, scale * size, generator=g).to(device)}


def check(path: str, amp: str, device: torch.device) -> dict:
    predicted = estimate_training_memory(load_options(path)).predicted_peak
    with tempfile.TemporaryDirectory() as root:
        model = build(path, amp, device, root)
        data = batch(model.opt, device)
        model.feed_data(data)
        model.optimize_parameters(1)
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        model.feed_data(data)
        model.optimize_parameters(2)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        measured = torch.cuda.max_memory_allocated() if device.type == 'cuda' else None
        loss = float(model.log_dict.get('l_pix', float('nan')))
    return {'file': path, 'amp': amp, 'predicted': predicted, 'measured': measured, 'seconds': seconds,
            'loss': loss, 'ratio': measured / predicted if measured else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', nargs='+', required=True)
    parser.add_argument('--amp', nargs='+', default=['none'], choices=['none', 'bfloat16', 'float16'])
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rows, bad = [], False
    print(f'{"options":42} {"amp":9} {"predicted":>10} {"measured":>10} {"ratio":>6} {"s/it":>7} {"loss":>9}')
    for path in args.opt:
        for amp in args.amp:
            row = check(path, amp, device)
            rows.append(row)
            measured = f'{row["measured"] / GIB:.2f}' if row['measured'] else '-'
            ratio = f'{row["ratio"]:.2f}' if row['ratio'] else '-'
            print(f'{path:42} {amp:9} {row["predicted"] / GIB:10.2f} {measured:>10} {ratio:>6} '
                  f'{row["seconds"]:7.2f} {row["loss"]:9.4f}', flush=True)
            bad |= not math.isfinite(row['loss']) or (amp == 'none' and row['ratio'] is not None
                                                       and row['ratio'] > 1.1)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'device': torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu', 'rows': rows},
                      f, indent=2)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
