"""Shared start-up of the ``train``/``test`` entry points (the only code that knows about argv/exit)."""
import os
import sys

# Errors our code raises for bad options or data (their messages name the culprit): one line, exit status 1.
# Anything else keeps its traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError)


def run(pipeline_name: str, root_path: str | None = None) -> None:
    """Import the plugin, fix BasicSR's runner for this machine, and call BasicSR's pipeline.

    Args:
        pipeline_name: ``'train_pipeline'`` or ``'test_pipeline'``.
        root_path: Where ``experiments/``, ``results/`` and ``tb_logger/`` go. Default: the current
            directory (BasicSR's own runner would use the folder it is installed in).
    """
    import lrti_plugin  # noqa: F401  (registers archs, datasets, models)
    from lrti_plugin._compat import patch_basicsr_runners

    patch_basicsr_runners()
    if pipeline_name == 'train_pipeline':
        from basicsr.train import train_pipeline as pipeline
    else:
        from basicsr.test import test_pipeline as pipeline
    root_path = os.path.abspath(root_path or os.getcwd())
    try:
        pipeline(root_path)
    except USER_ERRORS as err:
        if os.environ.get('LRTI_TRACEBACK'):
            raise
        prog = 'lrti_plugin.' + pipeline_name.split('_')[0]
        sys.exit(f'{prog}: error: {type(err).__name__}: {err}\n(set LRTI_TRACEBACK=1 for the traceback)')
