"""LRTI-VSR as a BasicSR plugin.

Importing this package registers its archs, datasets and models into BasicSR's registries and
replaces two CUDA-only functions of BasicSR's runner (resume, process-group start; see ``_compat``),
and does nothing else (no I/O, no CUDA initialisation, no logging set-up).
"""
__version__ = '0.1.0'

from . import _compat  # noqa: E402,I001  (must run before basicsr is first imported)

_compat.install_functional_tensor_shim()

from . import archs, data, models  # noqa: E402,F401  (registers everything)

_compat.patch_basicsr_runners()
