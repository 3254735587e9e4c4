"""Window helpers for the 3-frame window attention of :mod:`lrti_plugin.archs.ritb_arch`.

Everything here works on channel-last tensors. Glossary: ``B`` batch, ``F`` frames in a window
(3: h2, h1, x), ``H, W`` the frame size, ``Hp, Wp`` the size padded to a multiple of the window
size ``ws``, ``nW`` windows per frame, ``N`` tokens per window.

Padding and shifted windows share one mechanism: every position of the padded canvas gets a
*region label*, and a query may only attend to keys with its own label. Per axis the label is
``0`` for the first ``shift`` rows/columns (they wrap around to the far edge under the cyclic
shift), ``2`` for padding, ``1`` otherwise; the 2-D label combines both axes. Real tokens therefore
never see padded tokens nor tokens from the opposite image edge, whatever the padding values are.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

_WRAPPED, _MAIN, _PAD = 0, 1, 2


def pad_to_window(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-pad the two spatial axes of a channel-last tensor at the bottom/right.

    Args:
        x: (..., H, W, C) tensor.
        window_size: The padded H and W become multiples of it.

    Returns:
        (..., Hp, Wp, C) tensor; ``x`` itself when no padding is needed.
    """
    h, w = x.shape[-3:-1]
    pad_h, pad_w = (-h) % window_size, (-w) % window_size
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (..., Hp, Wp, C)


def frames_to_windows(frames: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a stack of frames into windows that hold the same patch of every frame.

    Args:
        frames: (B, F, Hp, Wp, C) tensor, Hp and Wp multiples of ``window_size``.
        window_size: Window side ``ws``.

    Returns:
        (B, nW, F*ws*ws, C) tokens, frame-major: token ``f*ws*ws + i*ws + j`` is row ``i``,
        column ``j`` of frame ``f`` in the window. Windows are numbered row-major.
    """
    b, f, hp, wp, c = frames.shape
    ws = window_size
    x = frames.view(b, f, hp // ws, ws, wp // ws, ws, c)  # (B, F, nWh, ws, nWw, ws, C)
    x = x.permute(0, 2, 4, 1, 3, 5, 6)  # (B, nWh, nWw, F, ws, ws, C)
    return x.reshape(b, (hp // ws) * (wp // ws), f * ws * ws, c)  # (B, nW, F*ws*ws, C)


def windows_to_frame(windows: torch.Tensor, window_size: int, hp: int, wp: int) -> torch.Tensor:
    """Inverse of :func:`frames_to_windows` for a single frame.

    Args:
        windows: (B, nW, ws*ws, C) tokens of one frame.
        window_size: Window side ``ws``.
        hp: Padded height Hp.
        wp: Padded width Wp.

    Returns:
        (B, Hp, Wp, C) tensor.
    """
    b, _, _, c = windows.shape
    ws = window_size
    x = windows.view(b, hp // ws, wp // ws, ws, ws, c)  # (B, nWh, nWw, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nWh, ws, nWw, ws, C)
    return x.reshape(b, hp, wp, c)  # (B, Hp, Wp, C)


def _axis_labels(size: int, padded: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region label of each row (or column) of the padded canvas, in unshifted coordinates."""
    pos = torch.arange(padded, device=device)
    labels = torch.where(pos < shift, _WRAPPED, _MAIN)  # no boolean indexing: no device sync
    return torch.where(pos >= size, _PAD, labels)  # (padded,)


def window_region_mask(h: int, w: int, window_size: int, shift: int, num_frames: int,
                       device: torch.device) -> Optional[torch.Tensor]:
    """Which keys each query may attend to, for padded and (optionally) shifted windows.

    Queries are the ``ws*ws`` tokens of one frame, keys the ``num_frames*ws*ws`` tokens of all
    frames in the same window (token order of :func:`frames_to_windows`). A key is allowed iff it
    has the query's region label (see the module docstring), so a real query never attends to
    padding nor across the wrap-around seam of the cyclic shift.

    Args:
        h: Frame height H before padding.
        w: Frame width W before padding.
        window_size: Window side ``ws``.
        shift: Cyclic shift (0 <= shift < ws) applied before windowing, as ``roll(-shift)``.
        num_frames: Frames stacked in a window (F).
        device: Device of the mask.

    Returns:
        Boolean (nW, 1, ws*ws, F*ws*ws) mask, True = allowed (the singleton is the head axis), or
        None when every key is allowed (no shift and no padding).
    """
    ws = window_size
    hp, wp = padded_size(h, w, ws)
    if shift == 0 and hp == h and wp == w:
        return None
    rows = _axis_labels(h, hp, shift, device)  # (Hp,)
    cols = _axis_labels(w, wp, shift, device)  # (Wp,)
    labels = rows[:, None] * 3 + cols[None, :]  # (Hp, Wp)
    if shift:
        labels = torch.roll(labels, shifts=(-shift, -shift), dims=(0, 1))  # (Hp, Wp)
    labels = frames_to_windows(labels.view(1, 1, hp, wp, 1), ws)  # (1, nW, ws*ws, 1)
    q_labels = labels[0, :, :, 0]  # (nW, ws*ws)
    k_labels = q_labels.repeat(1, num_frames)  # (nW, F*ws*ws)
    return (q_labels[:, :, None] == k_labels[:, None, :]).unsqueeze(1)  # (nW, 1, ws*ws, F*ws*ws)


def relative_position_index(window_size: int, num_frames: int) -> torch.Tensor:
    """Index into the relative position bias table for every (query, key) pair of a window.

    The table has ``num_frames * (2*ws - 1)**2`` rows: one ``(2*ws - 1) x (2*ws - 1)`` block of
    spatial offsets per key frame. For a query at window position ``(qi, qj)`` (current frame) and
    a key at ``(f, ki, kj)`` the row is ``f*(2ws-1)**2 + (ki - qi + ws - 1)*(2ws-1) + (kj - qj + ws - 1)``;
    i.e. the table viewed as ``(F, 2ws-1, 2ws-1, nH)`` is indexed by ``[f, di + ws-1, dj + ws-1]``.

    Args:
        window_size: Window side ``ws``.
        num_frames: Key frames F.

    Returns:
        (ws*ws, F*ws*ws) long tensor.
    """
    ws = window_size
    span = 2 * ws - 1
    i, j = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    i, j = i.reshape(-1), j.reshape(-1)  # (ws*ws,)
    di = i[None, :] - i[:, None] + ws - 1  # (ws*ws, ws*ws): key minus query
    dj = j[None, :] - j[:, None] + ws - 1  # (ws*ws, ws*ws)
    spatial = di * span + dj  # (ws*ws, ws*ws)
    frame_offset = torch.arange(num_frames) * span * span  # (F,)
    index = spatial[:, None, :] + frame_offset[None, :, None]  # (ws*ws, F, ws*ws)
    return index.reshape(ws * ws, num_frames * ws * ws)  # (ws*ws, F*ws*ws)


def padded_size(h: int, w: int, window_size: int) -> Tuple[int, int]:
    """(Hp, Wp): H and W rounded up to multiples of ``window_size``."""
    return h + (-h) % window_size, w + (-w) % window_size
