"""Keep freed host memory in the process (glibc's malloc), so that big tensors are not faulted in again.

A recurrent VSR pass on the CPU allocates and frees feature maps of megabytes at every frame. With its
default settings glibc hands such blocks back to the kernel when they are freed (``munmap``, or a trim of the
heap's top), and the next one is faulted in and zeroed again, page by page: about 1.27 million minor page
faults per six Vid4 frames of BasicVSR (docs/benchmarks.md). :func:`keep_freed_memory` asks malloc to keep
what it gets: the process's resident memory then stays at its high-water mark, which a one-video command like
``lrti_plugin.infer`` reaches anyway.
"""
import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = (
    (M_MMAP_THRESHOLD, 32 << 20),  # blocks up to 32 MiB (glibc's largest) come from the heap, not from mmap
    (M_TRIM_THRESHOLD, 2**31 - 1),  # never give the heap's free top back
    (M_TOP_PAD, 1 << 30),  # grow the heap in big steps (address space only; pages are used when touched)
)
DISABLE = 'LRTI_KEEP_FREED_MEMORY'


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` through glibc's ``mallopt``; call it before the big allocations start.

    Does nothing (returns False) off Linux, without glibc's ``mallopt``, when ``LRTI_KEEP_FREED_MEMORY=0``,
    or when the user set glibc's own ``MALLOC_*_`` variables (theirs win). Returns whether all were applied.
    """
    if not sys.platform.startswith('linux') or os.environ.get(DISABLE, '1') == '0':
        return False
    if any(key.startswith('MALLOC_') and key.endswith('_') for key in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
