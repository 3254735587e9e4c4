"""Test with BasicSR's own `test_pipeline` and the plugin's components.

Usage (from the folder that should receive `results/`)::

    python -m lrti_plugin.test -opt options/test_lrti.yml
    python lrti_plugin/test.py -opt ...          # same, mirroring basicsr/test.py
"""
import os
import sys

if __name__ == '__main__' and not __package__:
    # Run as a file: make the package importable and keep this folder from shadowing top-level modules.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
    sys.path.insert(0, os.path.dirname(_here))

from lrti_plugin._runner import run  # noqa: E402


def main(root_path: str | None = None) -> None:
    run('test_pipeline', root_path)


if __name__ == '__main__':
    main()
