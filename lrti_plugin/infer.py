"""Upscale your own video with a trained model: video files or frame folders, exact bounded-memory streaming.

Usage::

    python -m lrti_plugin.infer -i INPUT -o OUTPUT (--opt OPTIONS.yml | --arch NAME --weights FILE)
        [--mode exact|lookahead|chunks|whole] [--chunk N] [--lookahead R] [--spill] [--max-frames N]
        [--device auto|cpu|cuda] [--amp none|bfloat16|float16] [--crf Q] [--fps F] [--overwrite]
        [--tile H W [--tile-overlap P]] [--pad] [--scene-cut T] [--gt GT [--crop-border N] [--report DIR]]

Input: a video file (anything FFmpeg decodes: mp4, mkv, mov...), a folder of frames (png, jpg, bmp, tif,
webp; sorted by name) or a glob pattern in quotes. Output: a video file (H.264, ``--crf`` quality, the
source's frame timestamps and rate, its audio and subtitle streams copied, tagged BT.709) or a folder of
PNGs named after the input frames (``000000.png``... for a video). Either is written under a hidden
temporary name beside ``OUTPUT`` and renamed when complete, so an interrupted run never leaves an output
that looks finished.

Model: an options file's ``network_g`` (weights from its ``path.pretrain_network_g`` unless ``--weights``),
or ``--arch NAME --weights FILE`` with ``--arch-opt key=value`` for the arch's arguments. ``params_ema`` is
used when the checkpoint has it, else ``params`` (BasicSR's official checkpoints and ours load).

Modes (:mod:`lrti_plugin.archs.streaming`): ``exact`` (default) gives the output of one whole-sequence pass
in memory bounded by ``--chunk`` (one sweep per branch, keeping only border states; about 1.5x the compute
of a whole pass for BasicVSR, 2.5x at most for the four-branch nets; the border states, one per branch and
chunk, stay in host memory or, with ``--spill``, in a temporary folder); ``lookahead`` is one online sweep
whose backward branches warm up over ``--lookahead`` future frames; ``chunks`` runs independent chunks from
zero states (what other tools do); ``whole`` runs every frame in one pass (memory grows with the video).

``--gt`` (a video or frames of the output's size) scores every frame as it is written (PSNR/SSIM on RGB
and Y, tOF) into ``OUTPUT_scores/``: ``scores.json``, ``scores.csv``, ``psnr_per_frame.png`` and
``comparison.png`` (:mod:`lrti_plugin.scoring`).

Every bad input (unreadable or corrupt video, a video without frames, unreadable or mixed-size frames,
non-image files, output equal to or inside the input, an existing output without ``--overwrite``, an
unwritable output folder, weights of another arch or width, frames smaller than the arch's minimum) is
one line on stderr and exit status 1; the input is never written to.
"""
import argparse
import contextlib
import itertools
import os
import signal
import sys
import time
from typing import Dict, List, Optional

from lrti_plugin.utils.host_memory import keep_freed_memory
from lrti_plugin.video_io import MediaError, is_video

MODES = ('exact', 'lookahead', 'chunks', 'whole')


class InferError(Exception):
    """A bad input, named in its message (one line)."""


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
    from lrti_plugin.utils.checkpoint import load_weights
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
    load_weights(net, weights, 'params_ema', key='--weights')  # BasicSR's rule: params when there is no EMA
    return net.eval().to(device)


def upscale(net, source, mode: str, chunk: int, lookahead: int, device, amp: str = 'none', cuts=(), tile=None,
            overlap: int = 16, pad: bool = False, progress=None, spill: bool = False):
    """Yield (first frame index, (1, n, 3, sH, sW) SR frames) of ``source`` (a ``video_io`` source) in time order.

    ``cuts``: frame indices where a new shot starts; each shot is run on its own, from zero states (no state
    crosses a cut, so the previous shot does not bleed into the next). ``tile``: (h, w) LR tiles with
    ``overlap`` pixels of context (:func:`~lrti_plugin.archs.streaming.stream_tiled`). ``pad``: frames (or
    tiles) smaller than the network's minimum are padded (edge pixels repeated) and the output cropped back.
    ``spill``: ``exact`` mode keeps its border states in a temporary folder instead of host memory."""
    import torch

    from lrti_plugin.archs.propagation import RecurrentVSR
    from lrti_plugin.archs.streaming import stream, stream_tiled

    height, width = source.size
    minimum = getattr(net, 'min_input_size', 1) if pad else 1
    if tile:
        tile = (max(min(tile[0], height), minimum), max(min(tile[1], width), minimum))
    pad_h, pad_w = max(0, minimum - height), max(0, minimum - width)

    def read(start, stop):
        return _to_input(source.read(start, stop), device, pad_h, pad_w)

    def crop(sr):
        scale = sr.size(-1) // (width + pad_w)
        return sr[..., :height * scale, :width * scale] if pad_h or pad_w else sr

    autocast = contextlib.nullcontext() if amp == 'none' else torch.autocast(
        device.type, dtype=getattr(torch, amp))
    if not isinstance(net, RecurrentVSR) and (mode in ('exact', 'lookahead') or tile):
        raise InferError(f'--mode {mode}{" --tile" if tile else ""}: {type(net).__name__} does not run on the '
                         'propagation engine (use --mode whole or chunks, without --tile)')
    bounds = [0, *cuts, len(source)]
    with torch.no_grad(), autocast:
        for first, last in zip(bounds, bounds[1:]):
            def shot_read(start, stop, first=first):
                return read(first + start, first + stop)

            if tile:
                pieces = stream_tiled(net, shot_read, last - first, tile, overlap, mode, chunk, lookahead, spill,
                                      progress=progress)
            elif isinstance(net, RecurrentVSR):
                pieces = stream(net, shot_read, last - first, mode, chunk, lookahead, spill, progress=progress)
            else:
                spans = [(0, last - first)] if mode == 'whole' else [
                    (s, min(s + chunk, last - first)) for s in range(0, last - first, chunk)]
                pieces = ((start, net(shot_read(start, stop))) for start, stop in spans)
            for start, sr in pieces:
                yield first + start, crop(sr)


def _check_paths(inp: str, out: str, overwrite: bool) -> None:
    src = os.path.realpath(inp if os.path.isdir(inp) or os.path.isfile(inp) else os.path.dirname(inp) or '.')
    dst = os.path.realpath(out)
    if dst == src or (os.path.isdir(src) and (dst.startswith(src + os.sep) or src.startswith(dst + os.sep))):
        raise InferError(f'{out}: the output must not be, contain or lie inside the input {inp}')
    if os.path.exists(out) and not overwrite:
        raise InferError(f'{out}: exists (give --overwrite to replace it)')
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise InferError(f'{out}: cannot write into {parent}')


def run(args) -> None:
    from tqdm import tqdm

    from lrti_plugin import video_io
    from lrti_plugin.archs.propagation import RecurrentVSR
    from lrti_plugin.archs.streaming import sweeps

    _check_paths(args.input, args.output, args.overwrite)
    device = _device(args.device)
    net = load_network(args.opt, args.arch, args.weights, parse_arch_opts(args.arch_opt), device)
    source = video_io.open_source(args.input, args.max_frames)
    sink = gt = scorer = None
    start_time = time.perf_counter()
    try:
        if args.gt:
            gt = video_io.open_source(args.gt, len(source))
            if len(gt) < len(source):
                raise InferError(f'--gt {args.gt}: {len(gt)} frames, but the input has {len(source)}')
            from lrti_plugin.scoring import GtScorer

            scorer = GtScorer(source.names, args.crop_border)
        if is_video(args.output):
            sink = video_io.VideoSink(args.output, source, fps=args.fps, crf=args.crf)
        else:
            sink = video_io.PngSink(args.output, source.names)
        cuts = video_io.scene_cuts(source, args.scene_cut)
        if cuts:
            print(f'{len(cuts)} scene cut(s), states reset at frame(s) {", ".join(map(str, cuts[:20]))}'
                  f'{" ..." if len(cuts) > 20 else ""}', file=sys.stderr)
        passes = sweeps(net, args.mode) if isinstance(net, RecurrentVSR) else 1
        counted = passes > 1 or bool(args.tile)  # the stream reports every sweep's chunks itself
        if gt is not None:  # before any work: a one-frame probe gives the output size
            out_h, out_w = _output_size(net, source, device)
            if tuple(gt.size) != (out_h, out_w):
                raise InferError(f'--gt {args.gt}: frames of {gt.size[1]}x{gt.size[0]}, but the output is '
                                 f'{out_w}x{out_h}')
        desc = f'{args.mode} ({passes} sweeps)' if passes > 1 else args.mode
        # The bar opens with the first finished chunk (an input the arch refuses fails before that, in one line)
        # and counts every sweep: in exact mode the first output comes only after the first sweeps.
        progress = {'bar': None}

        def advance(n):
            if progress['bar'] is None:
                progress['bar'] = tqdm(total=len(source) * passes, unit='frame', desc=desc, file=sys.stderr)
            progress['bar'].update(n)

        pieces = upscale(net, source, args.mode, args.chunk, args.lookahead, device, args.amp, cuts, args.tile,
                         args.tile_overlap, args.pad, advance if counted else None, args.spill)
        try:
            try:
                head = next(pieces)  # a frame the arch refuses (too small...) fails here, before any progress
            except ValueError as err:
                hint = ' (--pad pads small frames up to the minimum)' if 'must be >=' in str(err) and not args.pad \
                    else ''
                raise InferError(f'{args.input}: {err}{hint}') from None
            for start, sr in itertools.chain([head], pieces):
                for i, rgb in enumerate(video_io.iter_rgb(sr), start=start):
                    sink.write(rgb)
                    if scorer is not None:
                        scorer.add(rgb, gt.read(i, i + 1)[0], source.read(i, i + 1)[0])
                if not counted:
                    advance(sr.size(1))
        finally:
            if progress['bar'] is not None:
                progress['bar'].close()
        video_io.commit(sink.close(), args.output)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        source.close()
        if gt is not None:
            gt.close()
    seconds = time.perf_counter() - start_time
    print(f'{len(source)} frames -> {args.output} ({args.mode}, {len(source) / seconds:.2f} frames/s on {device})')
    if scorer is not None:
        report = args.report or os.path.splitext(args.output.rstrip(os.sep))[0] + '_scores'
        mean = scorer.write(report, f'{os.path.basename(args.output)} vs {os.path.basename(args.gt)} ({args.mode})')
        print(f'vs GT: PSNR {mean["psnr"]:.4f} dB, SSIM {mean["ssim"]:.4f}, Y-PSNR {mean["psnr_y"]:.4f} dB, '
              f'Y-SSIM {mean["ssim_y"]:.4f}, tOF {mean["tof"]:.4f} (per frame: {report}/scores.csv)')


def _output_size(net, source, device):
    """(height, width) of the SR frames, from ``net`` run on a small corner of the first frame (at most 64x64
    pixels, padded up to the net's minimum as ``--pad`` would)."""
    import torch

    height, width = source.size
    minimum = getattr(net, 'min_input_size', 1)
    ph, pw = min(height, 64), min(width, 64)
    frame = _to_input(source.read(0, 1)[:, :ph, :pw], device, max(0, minimum - ph), max(0, minimum - pw))
    with torch.no_grad():
        out = net(frame)
    scale = out.size(-1) // frame.size(-1)
    return height * scale, width * scale


def _to_input(frames, device, pad_h: int = 0, pad_w: int = 0):
    """(n, H, W, 3) uint8 frames -> the network's (1, n, 3, H + pad_h, W + pad_w) float input in [0, 1], the
    bottom and right edges repeated by ``pad_h``/``pad_w`` pixels (what ``--pad`` does to small frames)."""
    import torch

    frames = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (n, 3, H, W)
    if pad_h or pad_w:
        frames = torch.nn.functional.pad(frames, (0, pad_w, 0, pad_h), mode='replicate')
    return frames.unsqueeze(0)


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
    parser.add_argument('-i', '--input', required=True, help='a video file, a folder of frames, or a quoted glob')
    parser.add_argument('-o', '--output', required=True,
                        help='a video file (.mp4, .mkv, .mov...: H.264) or a folder of PNGs')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--opt', help='an options file: its network_g (and path.pretrain_network_g)')
    model.add_argument('--arch', help='a registered arch name (with --weights)')
    parser.add_argument('--weights', help='a checkpoint (params_ema preferred over params)')
    parser.add_argument('--arch-opt', nargs='*', metavar='KEY=VALUE', help="the arch's arguments (with --arch)")
    parser.add_argument('--mode', choices=MODES, default='exact',
                        help='exact (default: = one whole pass, bounded memory), lookahead, chunks, whole')
    parser.add_argument('--chunk', type=int, default=20, help='frames per chunk (default 20)')
    parser.add_argument('--lookahead', type=int, default=10, help='R future frames in --mode lookahead (default 10)')
    parser.add_argument('--spill', action='store_true',
                        help='exact mode: keep the border states (one per branch and chunk) in a temporary folder '
                             '($TMPDIR) instead of host memory, so that memory stays flat for any video length')
    parser.add_argument('--max-frames', type=int, help='only the first N frames')
    parser.add_argument('--device', default='auto', help='auto (the accelerator if any), cpu, cuda, cuda:1, ...')
    parser.add_argument('--tile', type=int, nargs=2, metavar=('H', 'W'),
                        help='run LR tiles of H x W pixels (frames too large for the device); combines with every mode')
    parser.add_argument('--tile-overlap', type=int, default=16, metavar='P',
                        help='pixels of context around each tile (default 16); the seams are cropped, not blended')
    parser.add_argument('--pad', action='store_true',
                        help="pad frames (or tiles) smaller than the network's minimum, and crop the output back")
    parser.add_argument('--amp', choices=('none', 'bfloat16', 'float16'), default='none',
                        help='mixed precision (flows and deformable alignment stay in float32)')
    parser.add_argument('--crf', type=int, default=18, help='H.264 quality of a video output (0 lossless; default 18)')
    parser.add_argument('--fps', type=float, default=25.0, help='frame rate of a video made from frames (default 25)')
    parser.add_argument('--scene-cut', type=float, default=0.0, metavar='T',
                        help='reset the states at hard cuts: mean grey difference of consecutive frames above T '
                             '(0..255; 30 is a good start; default 0: off)')
    parser.add_argument('--gt', help='ground truth (video or frames) to score the output against: PSNR/SSIM, tOF')
    parser.add_argument('--crop-border', type=int, default=0, help='pixels ignored at each edge when scoring')
    parser.add_argument('--report', help='where --gt writes its scores and plots (default: OUTPUT_scores/)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problem = None
    if args.arch and not args.weights:
        problem = '--arch needs --weights'
    elif args.chunk < 1:
        problem = f'--chunk: expected a positive int, got {args.chunk}'
    elif args.lookahead < 0:
        problem = f'--lookahead: expected frames >= 0, got {args.lookahead}'
    elif args.tile and (min(args.tile) < 1 or args.tile_overlap < 0):
        problem = f'--tile {args.tile[0]} {args.tile[1]} --tile-overlap {args.tile_overlap}: expected positive sizes'
    elif not 0 <= args.crf <= 51:
        problem = f'--crf: expected 0..51, got {args.crf}'
    if problem:
        print(f'lrti_plugin.infer: error: {problem}', file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up like Ctrl-C: no partial output, no temp frames
    keep_freed_memory()  # CPU: no page faults for every feature map (glibc only; LRTI_KEEP_FREED_MEMORY=0: off)
    try:
        run(args)
    except KeyboardInterrupt:
        print('lrti_plugin.infer: interrupted; nothing written (the partial output was removed)', file=sys.stderr)
        return 1
    except (InferError, MediaError, ValueError, FileNotFoundError, KeyError) as err:
        print(f'lrti_plugin.infer: error: {" ".join(str(err).split())}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
