"""Model card: parameters, compute per frame and CPU time of the three networks at paper scale.

Compute is counted with ``torch.utils.flop_counter.FlopCounterMode`` on fake tensors (shapes only, no
arithmetic; every op of the three networks, ``torchvision.ops.deform_conv2d`` and ``grid_sample``
included, has a meta kernel). If a network cannot run on fake tensors, the script falls back to a real
forward on the CPU at the same size (slow at paper scale). What is counted: convolutions (with
``deform_conv2d`` as a convolution of its weight's size), linear layers and matrix products (attention);
not counted: element-wise ops, normalisation, activations, bilinear sampling (``grid_sample``,
``deform_conv2d``'s sampling) and interpolation. One multiply-add is one MAC = 2 FLOPs. The published
"FLOPs" of the field (fvcore style) are MACs, so the table compares MACs with them.

"Per frame" is the marginal cost of one more frame of a long clip, ``(C(5) - C(3)) / 2`` for a clip of
5 and of 3 frames (odd lengths: BasicVSR++'s mirror test on even lengths reads data): it includes the two
SpyNet flows each frame adds, and none of the start-up cost of a clip's first frames.

CPU time: median ms per frame over ``--repeat`` runs (after ``--warmup`` untimed ones) of a ``--time-frames`` clip at
``--time-size`` LR, with ``torch.no_grad()`` in eval mode, next to BasicSR's own ``BasicVSR`` and
``BasicVSRPlusPlus`` on the same input (BasicSR's BasicVSR++ builds its deformable alignment only on a
CUDA machine: on a CPU-only one it is another, smaller network, said in the table).

Example::

    .venv/bin/python scripts/model_card.py --repeat 1 --warmup 0 --json results/model_card.json
"""
import argparse  # noqa: I001  (lrti_plugin must be imported before basicsr: torchvision shim)
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import lrti_plugin  # noqa: F401  (shim before basicsr, registers the archs)
from basicsr.archs.basicvsr_arch import BasicVSR
from basicsr.archs.basicvsrpp_arch import BasicVSRPlusPlus
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR
from lrti_plugin.archs.basicvsrpp_arch import LRTIBasicVSRPP
from lrti_plugin.archs.lrti_vsr_arch import LRTIVSR

# name -> (constructor, counted: whether compute is counted, note)
MODELS: Dict[str, Tuple[Callable[[], nn.Module], bool, str]] = {
    'LRTIBasicVSR': (lambda: LRTIBasicVSR(num_feat=64, num_block=30), True, 'num_feat 64, num_block 30'),
    'LRTIBasicVSRPP': (lambda: LRTIBasicVSRPP(mid_channels=64, num_blocks=7), True,
                       'mid_channels 64, num_blocks 7, DCN on every device'),
    'LRTIVSR': (lambda: LRTIVSR(), True, 'defaults: C 120, 6 heads, 4 groups x 6 RITBs, window 8'),
    'BasicSR-BasicVSR': (lambda: BasicVSR(num_feat=64, num_block=30), False, 'reference implementation'),
    'BasicSR-BasicVSRPlusPlus': (lambda: BasicVSRPlusPlus(mid_channels=64, num_blocks=7), False,
                                 'reference implementation'),
}
# Published numbers: parameters (M) and "FLOPs" (fvcore-style MACs, T) per 180x320 LR frame.
REFERENCES = {'MIA-VSR': (16.6, 1.6), 'BasicVSR++': (7.3, 0.39), 'BasicVSR': (6.3, 0.33)}
COUNT_FRAMES = (3, 5)


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``torchvision::deform_conv2d`` as a convolution: 2 x outputs x (C_in / groups) x kh x kw."""
    return 2 * _prod(out_shape) * _prod(weight_shape[1:])


def _prod(shape) -> int:
    out = 1
    for v in shape:
        out *= int(v)
    return out


def _count(model: nn.Module, frames: int, h: int, w: int, fake: bool) -> int:
    """FLOPs of one forward of a (1, frames, 3, h, w) clip."""
    mapping = {torch.ops.torchvision.deform_conv2d.default: _deform_conv2d_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    if fake:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad(), counter:
            model(torch.empty(1, frames, 3, h, w))
    else:
        with torch.no_grad(), counter:
            model(torch.rand(1, frames, 3, h, w))
    return counter.get_total_flops()


def flops_per_frame(model: nn.Module, h: int, w: int) -> Tuple[float, str]:
    """Marginal FLOPs of one frame at LR size h x w, and how they were counted (``fake`` or ``real``)."""
    short, long = COUNT_FRAMES
    try:
        counts = [_count(model, t, h, w, fake=True) for t in COUNT_FRAMES]
        how = 'fake'
    except Exception as err:  # an op without a meta kernel or a data-dependent branch
        print(f'  fake-tensor count failed ({type(err).__name__}: {err}); counting a real CPU forward')
        counts = [_count(model, t, h, w, fake=False) for t in COUNT_FRAMES]
        how = 'real'
    return (counts[1] - counts[0]) / (long - short), how


def cpu_ms_per_frame(model: nn.Module, clip: torch.Tensor, repeat: int, warmup: int) -> float:
    """Median wall time per frame (ms) of ``model(clip)`` over ``repeat`` runs after ``warmup`` untimed ones."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            start = time.perf_counter()
            model(clip)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / clip.shape[1]


def _size(text: str) -> Tuple[int, int]:
    h, w = text.lower().split('x')
    return int(h), int(w)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', nargs='+', type=_size, default=[(180, 320), (144, 176)],
                   help='LR sizes HxW for the compute count (default: 180x320 144x176)')
    p.add_argument('--time-size', type=_size, default=(64, 64), help='LR size HxW of the timed clip')
    p.add_argument('--time-frames', type=int, default=5, help='frames of the timed clip')
    p.add_argument('--repeat', type=int, default=2, help='timed runs per network (median reported)')
    p.add_argument('--warmup', type=int, default=1, help='untimed runs per network before the timed ones')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS), help='networks to run')
    p.add_argument('--no-timing', action='store_true', help='skip the CPU timing')
    p.add_argument('--json', default=None, help='write the results to this JSON file')
    return p.parse_args(argv)


def run(args) -> dict:
    torch.manual_seed(0)
    th, tw = args.time_size
    clip = torch.rand(1, args.time_frames, 3, th, tw)
    rows = []
    for name in args.models:
        ctor, counted, note = MODELS[name]
        model = ctor().eval()
        if getattr(model, 'is_with_alignment', True) is False:
            note += '; DCN dropped (built without CUDA)'
        row = {'model': name, 'params_m': sum(p.numel() for p in model.parameters()) / 1e6, 'note': note}
        print(f'{name}: {row["params_m"]:.2f} M parameters')
        if counted:
            for h, w in args.sizes:
                flops, how = flops_per_frame(model, h, w)
                row[f'tmacs_{h}x{w}'] = flops / 2e12
                row['count'] = how
                print(f'  {h}x{w}: {flops / 2e12:.3f} TMACs per frame ({how})')
        if not args.no_timing:
            row['cpu_ms_per_frame'] = cpu_ms_per_frame(model, clip, args.repeat, args.warmup)
            print(f'  CPU: {row["cpu_ms_per_frame"]:.0f} ms per frame')
        rows.append(row)
        del model
    return {'rows': rows, 'references': REFERENCES, 'sizes': [f'{h}x{w}' for h, w in args.sizes],
            'time_input': f'{args.time_frames} frames of {th}x{tw} LR', 'repeat': args.repeat, 'warmup': args.warmup,
            'machine': {'platform': platform.platform(), 'processor': platform.processor(), 'nproc': os.cpu_count(),
                        'torch_threads': torch.get_num_threads(), 'torch': torch.__version__}}


def markdown(result: dict) -> str:
    sizes = result['sizes']
    head = ['Model', 'Params (M)'] + [f'TMACs/frame {s}' for s in sizes]
    head += [f'CPU ms/frame ({result["time_input"]})', 'Config / note']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]

    def cell(value: Optional[float], fmt: str) -> str:
        return '-' if value is None else format(value, fmt)

    for row in result['rows']:
        cells = [row['model'], cell(row['params_m'], '.2f')]
        cells += [cell(row.get(f'tmacs_{s}'), '.3f') for s in sizes]
        cells += [cell(row.get('cpu_ms_per_frame'), '.0f'), row['note']]
        lines.append('| ' + ' | '.join(cells) + ' |')
    first = sizes[0] if sizes else None
    for name, (params, tmacs) in result['references'].items():
        cells = [f'{name} (published)', f'{params:.1f}']
        cells += [f'{tmacs:.2f}' if s == first == '180x320' else '-' for s in sizes]
        cells += ['-', 'paper numbers ("FLOPs" = MACs) per 180x320 frame']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: List[str] = None) -> None:
    args = parse_args(argv)
    result = run(args)
    table = markdown(result)
    result['table'] = table
    print()
    print(table)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as fout:
            json.dump(result, fout, indent=2)


if __name__ == '__main__':
    main()
