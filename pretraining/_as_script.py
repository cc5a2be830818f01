"""Run a ``pretraining`` module's ``main`` when its file is run directly.

``python pretraining/pretraining.py`` puts the ``pretraining/`` folder first on
``sys.path``, where ``pretraining.py`` shadows the package of the same name.
Each runnable module starts with::

    if __name__ == "__main__" and not __package__:
        import _as_script  # a sibling file, importable before the path is fixed
        _as_script.run("pretraining.export")

:func:`run` takes this folder off ``sys.path``, puts the repository root first,
imports the package module and calls its ``main`` once (the file's own
top-level code does not run a second time as ``__main__``).
"""

import importlib
import os
import sys


def run(module):
    """Import ``module`` from the package and run its ``main()``; then exit 0."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    sys.modules.pop("pretraining", None)  # the shadowing file, if it was imported
    importlib.import_module(module).main()
    raise SystemExit(0)
