"""Turn folders of clips into a BasicSR LMDB plus the dataset meta-info file.

Examples:
    python scripts/make_lmdb.py --gt datasets/REDS/train_sharp --out datasets/REDS/train_sharp.lmdb --layout reds
    python scripts/make_lmdb.py --gt ../shared/data/train_real --out data/train_real_GT.lmdb --make-lr 4
    python scripts/make_lmdb.py --gt vid4/GT --lq vid4/BIx4 --scale 4 --check-only

The work is done by :func:`lrti_plugin.data.lmdb_tools.make_lmdb`; see its docstring for the key and file
conventions. Exit status: 0 on success, 1 with the culprit on stderr on a data problem, 2 on bad arguments.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--gt', required=True, help='folder of GT clips')
    parser.add_argument('--out', help='GT LMDB to create (must end in .lmdb); not needed with --check-only')
    parser.add_argument('--layout', choices=('auto', 'reds', 'vimeo'), default='auto',
                        help='reds: root/<clip>/<frame>; vimeo: root/<seq>/<sub>/imN.png (clip <seq>/<sub>); '
                        'auto: every folder with images is a clip (default)')
    parser.add_argument('--lq', help='folder of LQ clips: checked against --gt (counts, GT = scale x LQ) and written '
                        'to --lr-out')
    parser.add_argument('--scale', type=int, default=4, help='GT/LQ scale for --lq (default 4)')
    parser.add_argument('--make-lr', type=int, metavar='S',
                        help='also write an xS LR LMDB downscaled from the GT (MATLAB bicubic); GT frames are '
                        'cropped to a multiple of S')
    parser.add_argument('--lr-out', help='LR LMDB path (default <out stem>_LRx<S>.lmdb)')
    parser.add_argument('--meta-info', help='dataset meta-info file (default <out stem>_meta_info.txt beside --out)')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression 0..9 (default 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    parser.add_argument('--check-only', action='store_true', help='check the data, write nothing')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if args.out is None and not args.check_only:
        parser.error('--out is required unless --check-only is given')
    if args.make_lr is not None and args.lq is not None:
        parser.error('--make-lr and --lq exclude each other')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import lrti_plugin  # noqa: F401  (shims torchvision before basicsr is imported)
    from lrti_plugin.data.lmdb_tools import MakeLmdbError, make_lmdb

    try:
        result = make_lmdb(args.gt, args.out, layout=args.layout, lq_root=args.lq, scale=args.scale,
                           make_lr=args.make_lr, lr_out=args.lr_out, meta_info=args.meta_info,
                           compress_level=args.compress_level, overwrite=args.overwrite,
                           check_only=args.check_only, progress=not args.no_progress)
    except (MakeLmdbError, FileNotFoundError, ValueError) as err:
        print(f'make_lmdb: error: {err}', file=sys.stderr)
        return 1
    if args.check_only:
        print(f'OK: {len(result.clips)} clips checked, nothing written.')
    else:
        print(f'Wrote {result.gt_lmdb} ({len(result.clips)} clips)'
              + (f', {result.lr_lmdb}' if result.lr_lmdb else '') + f'; meta info {result.meta_info}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
