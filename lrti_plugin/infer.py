"""Upscale your own frames with a trained model (a first version: frame folders, whole and chunked passes).

Usage::

    python -m lrti_plugin.infer -i FRAMES/ -o OUT/ --opt options/test_lrti.yml [--weights FILE]
    python -m lrti_plugin.infer -i FRAMES/ -o OUT/ --arch LRTIBasicVSR --weights FILE [--arch-opt num_block=30]
        [--mode whole|chunks] [--chunk N] [--max-frames N] [--device auto|cpu|cuda] [--overwrite]

Input: a folder of frames (png, jpg, bmp, tif, webp; sorted by name) or a glob pattern in quotes. Output: a
folder of PNGs named after the input frames. It is written into a hidden temporary folder beside ``OUT`` and
renamed when every frame is written, so an interrupted run never leaves a folder that looks finished.

Model: an options file's ``network_g`` (weights from its ``path.pretrain_network_g`` unless ``--weights``), or
``--arch NAME --weights FILE`` with ``--arch-opt key=value`` for the arch's arguments. ``params_ema`` is used
when the checkpoint has it, else ``params`` (BasicSR's official checkpoints and ours load).

Modes: ``whole`` runs the clip in one pass (what the field reports; memory grows with the clip); ``chunks``
runs independent chunks of ``--chunk`` frames from zero states (bounded memory; costs PSNR near chunk
borders). Exact bounded-memory streaming, lookahead, video files (PyAV) and ``--gt`` scoring are the rest of
issue 11 and not here yet.

Every bad input (unreadable or mixed-size frames, non-image files, output equal to or inside the input, an
existing output without ``--overwrite``, weights of another arch or width, frames smaller than the arch's
minimum) is one line on stderr and exit status 1; the input is never written to.
"""
import argparse
import glob
import itertools
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class InferError(Exception):
    """A bad input, named in its message (one line)."""


def list_frames(source: str) -> List[str]:
    """The frame files of a folder (sorted by name; any non-image file is an error) or of a glob pattern."""
    if os.path.isdir(source):
        names = sorted(os.listdir(source))
        others = [n for n in names if not n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith('.')]
        if others:
            raise InferError(f'{source}: not an image file: {others[0]!r} (frames: {", ".join(IMAGE_EXTENSIONS)})')
        paths = [os.path.join(source, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif any(ch in source for ch in '*?['):
        paths = sorted(p for p in glob.glob(source) if p.lower().endswith(IMAGE_EXTENSIONS))
    else:
        raise InferError(f'{source}: no such folder (give a folder of frames or a quoted glob pattern)')
    if not paths:
        raise InferError(f'{source}: no frames found')
    return paths


def read_frames(paths: List[str]):
    """(T, 3, H, W) float32 RGB in [0, 1]; every frame readable and of the first frame's size."""
    import cv2
    import numpy as np
    import torch

    frames, size = [], None
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise InferError(f'{path}: unreadable image')
        if size is None:
            size = img.shape[:2]
        elif img.shape[:2] != size:
            raise InferError(f'{path}: {img.shape[1]}x{img.shape[0]}, but {paths[0]} is {size[1]}x{size[0]} '
                             '(all frames must have one size)')
        frames.append(torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))))
    return torch.stack(frames).float().div_(255.0)


def parse_arch_opts(items: Optional[List[str]]) -> Dict:
    """``key=value`` strings to a dict, values read as YAML scalars (``30`` -> int, ``true`` -> bool)."""
    import yaml

    out = {}
    for item in items or []:
        if '=' not in item:
            raise InferError(f'--arch-opt {item!r}: expected key=value')
        key, value = item.split('=', 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_network(opt_path: Optional[str], arch: Optional[str], weights: Optional[str], arch_opts: Dict, device):
    """The network of ``--opt`` or ``--arch``, with its weights (``params_ema`` preferred), in eval mode."""
    from basicsr.utils.registry import ARCH_REGISTRY

    import lrti_plugin  # noqa: F401  (registers the archs)
    from lrti_plugin.utils.checkpoint import check_state_dict, read_checkpoint, select_params
    from lrti_plugin.utils.option_check import check_network
    from lrti_plugin.utils.options import load_options

    if opt_path:
        opt = load_options(opt_path)
        net_opt = dict(opt['network_g'])
        weights = weights or (opt.get('path') or {}).get('pretrain_network_g')
        if not weights:
            raise InferError(f'{opt_path}: no path.pretrain_network_g; give --weights')
    else:
        net_opt = {'type': arch, **arch_opts}
    net_opt.pop('spynet_path', None)  # the checkpoint holds the flow network's weights too
    check_network(net_opt, '--arch' if not opt_path else f'{opt_path}: network_g')
    net = ARCH_REGISTRY.get(net_opt['type'])(**{k: v for k, v in net_opt.items() if k != 'type'})
    checkpoint = read_checkpoint(weights, '--weights')
    key = 'params_ema' if isinstance(checkpoint, dict) and 'params_ema' in checkpoint else 'params'
    state = select_params(checkpoint, weights, key)
    check_state_dict(net, state, weights)
    net.load_state_dict(state)
    return net.eval().to(device), key


def upscale(net, frames, mode: str, chunk: int, device):
    """Yield (first frame index, SR frames (t, 3, sH, sW) on the CPU) for ``frames`` (T, 3, H, W)."""
    import torch

    spans = [(0, frames.size(0))] if mode == 'whole' else [
        (s, min(s + chunk, frames.size(0))) for s in range(0, frames.size(0), chunk)]
    with torch.no_grad():
        for start, end in spans:
            yield start, net(frames[start:end].unsqueeze(0).to(device))[0].float().clamp_(0, 1).cpu()


def _check_paths(inp: str, out: str, overwrite: bool) -> None:
    src = os.path.realpath(inp if os.path.isdir(inp) else os.path.dirname(inp) or '.')
    dst = os.path.realpath(out)
    if dst == src or dst.startswith(src + os.sep) or src.startswith(dst + os.sep):
        raise InferError(f'{out}: the output must not be, contain or lie inside the input folder {inp}')
    if os.path.exists(out) and not overwrite:
        raise InferError(f'{out}: exists (give --overwrite to replace it)')
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise InferError(f'{out}: cannot write into {parent}')


def run(args) -> None:
    import cv2
    from tqdm import tqdm

    _check_paths(args.input, args.output, args.overwrite)
    paths = list_frames(args.input)[:args.max_frames or None]
    device = _device(args.device)
    net, key = load_network(args.opt, args.arch, args.weights, parse_arch_opts(args.arch_opt), device)
    frames = read_frames(paths)
    parent = os.path.dirname(os.path.abspath(args.output))
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(args.output))}.partial-', dir=parent)
    start_time = time.perf_counter()
    try:
        chunks = upscale(net, frames, args.mode, args.chunk, device)
        try:
            head = next(chunks)  # a frame the arch refuses (too small...) fails here, before any progress output
        except ValueError as err:
            raise InferError(f'{args.input}: {err}') from None
        with tqdm(total=len(paths), unit='frame', desc=f'{args.mode} ({key})', file=sys.stderr) as bar:
            for first, out in itertools.chain([head], chunks):
                bar.update(len(out))
                for i, frame in enumerate(out):
                    img = (frame.permute(1, 2, 0).numpy()[:, :, ::-1] * 255.0).round().astype('uint8')
                    name = os.path.splitext(os.path.basename(paths[first + i]))[0] + '.png'
                    if not cv2.imwrite(os.path.join(tmp, name), img):
                        raise InferError(f'{os.path.join(tmp, name)}: could not write')
        if os.path.exists(args.output):
            shutil.rmtree(args.output) if os.path.isdir(args.output) else os.remove(args.output)
        os.replace(tmp, args.output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start_time
    print(f'{len(paths)} frames -> {args.output} ({args.mode}, {len(paths) / seconds:.2f} frames/s on {device})')


def _device(name: str):
    """``auto``: the accelerator when there is one (CUDA...), else the CPU; otherwise any torch device name."""
    import torch

    if name == 'auto':
        return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device('cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InferError(f'--device {name!r}: not a device (auto, cpu, cuda, cuda:1, ...)') from None
    if device.type != 'cpu' and not getattr(torch, device.type).is_available():
        raise InferError(f'--device {name!r}: not available on this machine')
    return device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m lrti_plugin.infer', description=__doc__.split('\n\n')[0])
    parser.add_argument('-i', '--input', required=True, help='a folder of frames, or a quoted glob pattern')
    parser.add_argument('-o', '--output', required=True, help='the folder of PNGs to write')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--opt', help='an options file: its network_g (and path.pretrain_network_g)')
    model.add_argument('--arch', help='a registered arch name (with --weights)')
    parser.add_argument('--weights', help='a checkpoint (params_ema preferred over params)')
    parser.add_argument('--arch-opt', nargs='*', metavar='KEY=VALUE', help="the arch's arguments (with --arch)")
    parser.add_argument('--mode', choices=('whole', 'chunks'), default='whole')
    parser.add_argument('--chunk', type=int, default=20, help='frames per chunk in --mode chunks (default 20)')
    parser.add_argument('--max-frames', type=int, help='only the first N frames')
    parser.add_argument('--device', default='auto', help='auto (the accelerator if any), cpu, cuda, cuda:1, ...')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.arch and not args.weights:
        print('lrti_plugin.infer: error: --arch needs --weights', file=sys.stderr)
        return 1
    if args.chunk < 1:
        print(f'lrti_plugin.infer: error: --chunk: expected a positive int, got {args.chunk}', file=sys.stderr)
        return 1
    try:
        run(args)
    except KeyboardInterrupt:
        print('lrti_plugin.infer: interrupted; nothing written (the partial output was removed)', file=sys.stderr)
        return 1
    except (InferError, ValueError, FileNotFoundError, KeyError) as err:
        print(f'lrti_plugin.infer: error: {" ".join(str(err).split())}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
