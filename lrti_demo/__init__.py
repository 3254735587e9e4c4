"""The demo's own code (not part of the plugin): clips rendered from scikit-image photos, and the report.

``scripts/run_demo.py`` (``make demo``) uses it; the tests use the clips as tiny data.
"""
import lrti_plugin  # noqa: F401  (the torchvision shim must precede the first basicsr import)
