"""Reading clips: the meta-info parser, folder scanning and one frame reader for disk and LMDB.

Shared by :mod:`lrti_plugin.data.lmdb_tools` (which writes what these functions read) and the two
datasets, so that the key convention lives in one place:

* dataset meta-info file (BasicSR REDS format), one clip a line: ``<clip> <num_frames> (h,w,c)``;
  the shape is that of the GT frames and is optional;
* LMDB key of frame ``i`` of clip ``c``: ``f'{c}/{i:08d}'`` (e.g. ``000/00000000``; clip names may
  contain ``/``, e.g. Vimeo-90K's ``00001/0001``);
* each LMDB folder holds BasicSR's ``meta_info.txt``: ``<key>.png (h,w,c) <compress_level>``;
* on disk, frame ``i`` of clip ``c`` is ``<root>/<c>/<format(i, filename_tmpl)>.<filename_ext>``
  unless the clip was scanned, in which case its sorted file list is used.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from basicsr.utils import FileClient, imfrombytes

from lrti_plugin.utils.validate import check_known_keys

_LMDB_CLIENTS: Dict[Tuple[int, str], FileClient] = {}  # (pid, real path) -> client, filled on first use
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
_SHAPE_RE = re.compile(r'^\((\d+),(\d+),(\d+)\)$')


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    return [(0, int(tok), '') if tok.isdigit() else (1, 0, tok) for tok in re.split(r'(\d+)', name) if tok]


def lmdb_key(clip: str, index: int) -> str:
    """LMDB key of frame ``index`` of ``clip`` (BasicSR REDS convention, ``000/00000000``)."""
    return f'{clip}/{index:08d}'


@dataclass
class ClipInfo:
    """One clip as listed by a meta-info file or found by scanning.

    Attributes:
        name: Clip name, relative to the data root (may contain ``/``).
        num_frames: Number of frames ``L``.
        shape: ``(h, w, c)`` of the GT frames if known.
        frames: Explicit frame file paths (scanned clips only); ``None`` means "use the template".
    """
    name: str
    num_frames: int
    shape: Optional[Tuple[int, int, int]] = None
    frames: Optional[List[str]] = field(default=None, repr=False)


def read_meta_info(path: str) -> List[ClipInfo]:
    """Parse a dataset meta-info file (``<clip> <num_frames> [(h,w,c)]`` per line).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On a malformed line or a duplicated clip (names the file and line number).
    """
    clips, seen = [], set()
    with open(path) as fin:
        for lineno, line in enumerate(fin, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3) or not parts[1].isdigit():
                raise ValueError(f'{path}:{lineno}: expected "<clip> <num_frames> (h,w,c)", got {line.strip()!r}')
            shape = None
            if len(parts) == 3:
                match = _SHAPE_RE.match(parts[2])
                if match is None:
                    raise ValueError(f'{path}:{lineno}: bad shape {parts[2]!r}, expected "(h,w,c)"')
                shape = tuple(int(v) for v in match.groups())
            if parts[0] in seen:
                raise ValueError(f'{path}:{lineno}: clip {parts[0]!r} is listed twice')
            seen.add(parts[0])
            clips.append(ClipInfo(parts[0], int(parts[1]), shape))
    return clips


def format_meta_line(name: str, num_frames: int, shape: Sequence[int]) -> str:
    """One meta-info line, the inverse of :func:`read_meta_info`."""
    h, w, c = shape
    return f'{name} {num_frames} ({h},{w},{c})\n'


def _images_in(folder: Path) -> List[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def scan_clips(root: str, layout: str = 'auto') -> Dict[str, List[Path]]:
    """Find the clips under ``root`` and their naturally sorted frame files.

    Args:
        root: Folder of clip folders.
        layout: ``reds`` (``root/<clip>/<frame>``), ``vimeo`` (``root/<seq>/<sub>/im1.png``, clip name
            ``<seq>/<sub>``) or ``auto`` (every folder below ``root`` that contains images is a clip, named
            by its path relative to ``root``; images directly in ``root`` form a clip named after ``root``).

    Returns:
        Clip name -> frame paths, clips in natural order.

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
        ValueError: If ``layout`` is unknown, a clip folder of a fixed layout holds no images, or no clip is found.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f'Data root {root} is not a folder.')
    if layout not in ('auto', 'reds', 'vimeo'):
        raise ValueError(f"layout must be 'auto', 'reds' or 'vimeo', got {layout!r}")
    clips = {}
    if layout == 'auto':
        for dirpath, dirnames, _ in os.walk(root_path, followlinks=True):  # datasets are often symlinked
            dirnames.sort()
            images = _images_in(Path(dirpath))
            if images:
                name = Path(dirpath).relative_to(root_path).as_posix()
                clips[root_path.resolve().name if name == '.' else name] = images
    else:
        depth = 1 if layout == 'reds' else 2
        folders = [root_path]
        for _ in range(depth):
            folders = [d for f in folders for d in sorted(f.iterdir()) if d.is_dir()]
        for folder in folders:
            images = _images_in(folder)
            name = folder.relative_to(root_path).as_posix()
            if not images:
                raise ValueError(f'Clip folder {folder} ({layout} layout) contains no images.')
            clips[name] = images
    if not clips:
        raise ValueError(f'No clip folders with images found under {root} (layout {layout}).')
    return dict(sorted(clips.items(), key=lambda kv: natural_key(kv[0])))


def lmdb_keys(lmdb_path: str) -> List[str]:
    """Keys stored in a BasicSR LMDB: from its ``meta_info.txt`` if present, else by listing the database.

    Raises:
        FileNotFoundError: If ``lmdb_path`` is not an LMDB folder.
    """
    if not os.path.isfile(os.path.join(lmdb_path, 'data.mdb')):
        raise FileNotFoundError(f'{lmdb_path} is not an LMDB folder (no data.mdb).')
    meta = os.path.join(lmdb_path, 'meta_info.txt')
    if os.path.isfile(meta):
        with open(meta) as fin:
            # '<key>.png (h,w,c) level': the key is everything before the last '.' of the first field
            return [line.split()[0].rsplit('.', 1)[0] for line in fin if line.strip()]
    env = shared_lmdb_client(lmdb_path).client._client['default']  # the lmdb.Environment BasicSR opened
    with env.begin(write=False) as txn:
        return [key.decode('ascii') for key in txn.cursor().iternext(keys=True, values=False)]


def shared_lmdb_client(path: str, **kwargs) -> FileClient:
    """This process's BasicSR LMDB ``FileClient`` for ``path`` (client key ``'default'``).

    py-lmdb refuses to open one path twice in a process, so every reader shares one client per path;
    ``kwargs`` (``readonly``, ``lock``, ...) of the first caller win. Clients inherited through ``fork``
    (dataloader workers) are closed in the child first: LMDB handles must not cross a fork, and py-lmdb
    would refuse to reopen their files while they are registered.
    """
    pid = os.getpid()
    for key in [k for k in _LMDB_CLIENTS if k[0] != pid]:
        for env in _LMDB_CLIENTS.pop(key).client._client.values():
            env.close()  # the child's copy only; the parent's handle stays valid
    cache_key = (pid, os.path.realpath(path))
    if cache_key not in _LMDB_CLIENTS:
        _LMDB_CLIENTS[cache_key] = FileClient('lmdb', db_paths=[str(path)], client_keys=['default'], **kwargs)
    return _LMDB_CLIENTS[cache_key]


def check_lmdb_keys(lmdb_path: str, clips: Sequence[ClipInfo]) -> None:
    """Check that ``lmdb_path`` holds every frame key the meta-info ``clips`` imply.

    Raises:
        KeyError: Naming the first missing key and the LMDB path (keys beyond the meta info are allowed).
    """
    stored = set(lmdb_keys(lmdb_path))
    for clip in clips:
        for index in range(clip.num_frames):
            key = lmdb_key(clip.name, index)
            if key not in stored:
                raise KeyError(f'LMDB {lmdb_path} has no key {key!r}, which the meta info implies '
                               f'(clip {clip.name!r}, {clip.num_frames} frames); is it the right meta-info file?')


class FrameReader:
    """Reads frames of named clips from one or more roots through a BasicSR ``FileClient``.

    Args:
        io_backend: BasicSR ``io_backend`` option (``{'type': 'disk' | 'lmdb', ...}``); copied, never mutated.
        roots: Client key (``'lq'``, ``'gt'``) -> data root (a folder, or an ``.lmdb`` folder).
        filename_tmpl: Format spec of the frame index in disk file names (``'08d'``: ``00000000``).
        filename_ext: Disk file extension, without the dot.

    The ``FileClient`` is created on first use in each process (an LMDB environment must not cross a
    ``fork``), and is left out when the reader is pickled for ``spawn`` dataloader workers.
    """

    def __init__(self, io_backend: dict, roots: Dict[str, str], filename_tmpl: str = '08d',
                 filename_ext: str = 'png'):
        backend = dict(io_backend)
        self.backend = backend.pop('type', 'disk')
        if self.backend not in ('disk', 'lmdb'):
            raise ValueError(f"io_backend type must be 'disk' or 'lmdb', got {self.backend!r}")
        self.roots = {k: str(v) for k, v in roots.items()}
        for key in ('db_paths', 'client_keys'):  # set per root below
            backend.pop(key, None)
        self.backend_kwargs = backend
        self.filename_tmpl = filename_tmpl
        self.filename_ext = filename_ext
        self.scanned: Dict[str, Dict[str, List[str]]] = {}  # client -> clip -> frame paths
        self._clients: Dict[str, FileClient] = {}
        self._client_pid = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_clients'], state['_client_pid'] = {}, None
        return state

    def _client(self, client: str) -> FileClient:
        if self._client_pid != os.getpid():
            self._clients, self._client_pid = {}, os.getpid()
        if client not in self._clients:
            if self.is_lmdb:
                self._clients[client] = shared_lmdb_client(self.roots[client], **self.backend_kwargs)
            else:
                self._clients[client] = FileClient('disk', **self.backend_kwargs)
        return self._clients[client]

    @property
    def is_lmdb(self) -> bool:
        return self.backend == 'lmdb'

    def locate(self, client: str, clip: str, index: int) -> str:
        """Disk path or LMDB key of frame ``index`` of ``clip``."""
        if self.is_lmdb:
            return lmdb_key(clip, index)
        frames = self.scanned.get(client, {}).get(clip)
        if frames is not None:
            return frames[index]
        return os.path.join(self.roots[client], clip, f'{index:{self.filename_tmpl}}.{self.filename_ext}')

    def describe(self, client: str, clip: str, index: int) -> str:
        """Human-readable location of a frame for error messages."""
        where = self.locate(client, clip, index)
        return f'key {where!r} in {self.roots[client]}' if self.is_lmdb else where

    def read(self, client: str, clip: str, index: int) -> np.ndarray:
        """Frame as float32 BGR ``(h, w, 3)`` in [0, 1].

        Raises:
            FileNotFoundError: Missing file or LMDB key (named).
            ValueError: Bytes that do not decode as an image (named).
        """
        where = self.locate(client, clip, index)
        try:
            content = self._client(client).get(where)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'Missing frame {where}') from err
        if content is None:
            raise FileNotFoundError(f'Missing frame: {self.describe(client, clip, index)}')
        try:
            img = imfrombytes(content) if len(content) else None
        except cv2.error:
            img = None
        if img is None:
            raise ValueError(f'Unreadable image: {self.describe(client, clip, index)}')
        return img.astype(np.float32) / 255.


# Keys BasicSR itself puts into (or reads from) every dataset option dict.
BASICSR_DATASET_KEYS = frozenset({
    'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio',
    'use_shuffle', 'prefetch_mode', 'num_prefetch_queue', 'pin_memory', 'persistent_workers'
})


def check_option_keys(opt: dict, own_keys: Sequence[str], owner: str) -> None:
    """Reject option keys that neither ``owner`` nor BasicSR's loader use (typos would pass silently).

    Raises:
        ValueError: Naming the first unknown key.
    """
    check_known_keys(owner, opt, [*own_keys, *BASICSR_DATASET_KEYS])


def require_option(opt: dict, key: str, owner: str):
    """``opt[key]``, or a ValueError naming the missing key."""
    if opt.get(key) is None:
        raise ValueError(f'{owner}: option {key!r} is required.')
    return opt[key]
