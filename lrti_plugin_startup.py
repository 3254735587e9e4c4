"""Start-up hook: lets BasicSR 1.4.2 be imported on torchvision >= 0.17 in any process of the environment.

``basicsr/data/degradations.py`` imports ``torchvision.transforms.functional_tensor``, a module that
torchvision 0.17 removed, so ``import basicsr`` fails before BasicSR's own ``train.py`` has read the
options file whose ``plugin:`` tag would import ``lrti_plugin``. This module answers that one import
and nothing else.

``python -m lrti_plugin_startup install`` writes ``lrti_plugin_startup.pth`` into the environment's
``site-packages`` (``make venv`` does it); Python then runs :func:`install` at every start-up. That adds
a finder at the *end* of ``sys.meta_path`` that only ever answers the missing module's name, so:

* start-up stays cheap: nothing is imported (not torch, not torchvision) until someone imports the
  missing module;
* where torchvision still has the module, its own file wins (the finder is asked last);
* the module it supplies re-exports ``rgb_to_grayscale`` from ``torchvision.transforms.functional``,
  the only name BasicSR takes from it.

``python -m lrti_plugin_startup uninstall`` removes the ``.pth``; ``status`` says where it is. The
plugin also calls :func:`install` when it is imported, so processes started without the ``.pth``
work as soon as ``lrti_plugin`` is imported before BasicSR.
"""
import importlib.abc
import importlib.util
import os
import sys
import sysconfig

MISSING = 'torchvision.transforms.functional_tensor'
PTH_NAME = 'lrti_plugin_startup.pth'
# One line, run by site.py at start-up; it does nothing if this module is gone (plugin uninstalled).
PTH_LINE = ("import importlib.util as _u; _u.find_spec('lrti_plugin_startup') and "
            "__import__('lrti_plugin_startup').install()\n")


class _FunctionalTensorLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        from torchvision.transforms.functional import rgb_to_grayscale

        module.rgb_to_grayscale = rgb_to_grayscale


class FunctionalTensorFinder(importlib.abc.MetaPathFinder):
    """Supplies ``torchvision.transforms.functional_tensor`` when no other finder has it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != MISSING:
            return None
        return importlib.util.spec_from_loader(fullname, _FunctionalTensorLoader())


def install() -> None:
    """Append the finder to ``sys.meta_path`` (idempotent; cheap: imports nothing)."""
    if not _active():
        sys.meta_path.append(FunctionalTensorFinder())


def _active() -> bool:
    # By name: the module may run twice under two names (``__main__`` and ``lrti_plugin_startup``).
    return any(type(f).__name__ == FunctionalTensorFinder.__name__ for f in sys.meta_path)


def pth_path(site_dir: str | None = None) -> str:
    """Where the ``.pth`` goes: ``site_dir``, or this interpreter's ``site-packages`` (purelib)."""
    return os.path.join(site_dir or sysconfig.get_paths()['purelib'], PTH_NAME)


def write_pth(site_dir: str | None = None) -> str:
    """Write (or refresh) the ``.pth`` in ``site_dir`` atomically; returns its path."""
    path = pth_path(site_dir)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(PTH_LINE)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog='python -m lrti_plugin_startup', description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=('install', 'uninstall', 'status'))
    parser.add_argument('--site-dir', help='folder to write the .pth to (default: this environment\'s site-packages)')
    args = parser.parse_args(argv)
    path = pth_path(args.site_dir)
    if args.action == 'install':
        try:
            write_pth(args.site_dir)
        except OSError as err:
            print(f'lrti_plugin_startup: cannot write {path}: {err.strerror}', file=sys.stderr)
            return 1
        print(f'installed {path}')
    elif args.action == 'uninstall':
        if os.path.exists(path):
            os.remove(path)
            print(f'removed {path}')
        else:
            print(f'not installed ({path} absent)')
    else:
        active = _active()
        print(f'{path}: {"present" if os.path.exists(path) else "absent"}; finder active in this process: {active}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
