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
        _check_options_file(sys.argv[1:])  # a typo fails here, before any dataset or network is built
        pipeline(root_path)
    except USER_ERRORS as err:
        if os.environ.get('LRTI_TRACEBACK'):
            raise
        prog = 'lrti_plugin.' + pipeline_name.split('_')[0]
        message = ' '.join(str(err).split())  # one line, whatever the exception put in it
        sys.exit(f'{prog}: error: {message} [{type(err).__name__}; LRTI_TRACEBACK=1 shows the traceback]')


def _check_options_file(argv) -> None:
    """Check the ``-opt`` file's keys and types (:mod:`lrti_plugin.utils.option_check`); BasicSR parses argv."""
    from lrti_plugin.utils.option_check import check_options
    from lrti_plugin.utils.options import load_options

    if '-opt' not in argv or argv.index('-opt') + 1 >= len(argv):
        return  # BasicSR's parser prints the usage
    path = argv[argv.index('-opt') + 1]
    if not os.path.isfile(path):
        raise FileNotFoundError(f'-opt: no options file at {path!r}')
    check_options(load_options(path), path)
