"""Train with BasicSR's own `train_pipeline` and the plugin's components.

Usage (from the folder that should receive `experiments/`)::

    python -m lrti_plugin.train -opt options/train_lrti.yml [--auto_resume] [--debug] [--launcher pytorch]
    python lrti_plugin/train.py -opt ...          # same, mirroring basicsr/train.py
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
    run('train_pipeline', root_path)


if __name__ == '__main__':
    main()
