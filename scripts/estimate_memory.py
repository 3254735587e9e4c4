"""Predict the peak GPU memory of an options file's training step (or, for test options, of a whole-clip pass).

    python scripts/estimate_memory.py -opt options/train_lrti.yml
    python scripts/estimate_memory.py -opt options/test_lrti.yml --frames 100 --lr-size 180 320
    python scripts/estimate_memory.py -opt FILE --json out.json --budget-gib 40

Runs on any machine in seconds to a minute: the network is built at its real widths on PyTorch's meta
device (no weights read, no memory used) and measured on the options' real crop; see
``lrti_plugin/utils/memory.py`` for what is counted. The last line reads
``predicted peak per GPU: X GiB``; the exit status is 1 when it exceeds ``--budget-gib`` (default 40).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lrti_plugin  # noqa: E402,F401  (registers the archs)
from lrti_plugin.utils.memory import GIB, estimate_inference_memory, estimate_training_memory  # noqa: E402
from lrti_plugin.utils.option_check import check_options  # noqa: E402
from lrti_plugin.utils.options import load_options  # noqa: E402


def estimate(path: str, frames: int, lr_size) -> dict:
    """The estimate of one options file as a dict (``kind`` training or inference, bytes per term)."""
    opt = load_options(path)
    check_options(opt, path)
    train = (opt.get('datasets') or {}).get('train')
    if train is not None and 'gt_size' in train:
        return {'file': path, 'kind': 'training', **estimate_training_memory(opt).as_dict()}
    return {'file': path, 'kind': 'inference', **estimate_inference_memory(opt, frames, *lr_size)}


def _table(result: dict) -> str:
    rows = [(k, v) for k, v in result.items() if k not in ('file', 'kind')]
    lines = [f'{result["file"]} ({result["kind"]})', f'{"term":<22} {"value":>14}']
    for key, value in rows:
        shown = f'{value / GIB:.3f} GiB' if isinstance(value, int) and key not in (
            'lr_patch', 'windows_per_step', 'clip_frames', 'long_frames', 'frames') else str(value)
        lines.append(f'{key:<22} {shown:>14}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='a BasicSR options file')
    parser.add_argument('--frames', type=int, default=100, help='inference: LR frames per clip (default 100, REDS)')
    parser.add_argument('--lr-size', type=int, nargs=2, default=(180, 320), metavar=('H', 'W'),
                        help='inference: LR frame size (default 180 320, REDS)')
    parser.add_argument('--budget-gib', type=float, default=40.0, help='exit 1 above this (default 40)')
    parser.add_argument('--json', help='also write the estimate here')
    args = parser.parse_args(argv)
    try:
        result = estimate(args.opt, args.frames, args.lr_size)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f'estimate_memory: error: {" ".join(str(err).split())}', file=sys.stderr)
        return 1
    print(_table(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    peak = result['predicted_peak'] / GIB
    print(f'predicted peak per GPU: {peak:.2f} GiB')
    return 0 if peak <= args.budget_gib else 1


if __name__ == '__main__':
    sys.exit(main())
