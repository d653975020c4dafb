"""msd-triplet: music representations from a triplet network whose triplets are
chosen by the LSI relatedness of expert tags (Schindler & Knees, CBMI 2019).

Importing the package is cheap: no TensorFlow, librosa or file I/O happens
here. Import the stage you need, e.g. ``from msd_triplet import prepare``.

``import msd_triplet`` is nevertheless enough for ``keras.models.load_model``
to find the package's layers, loss and metrics: once Keras itself is imported
(by anyone, TensorFlow included) the modules that register them are imported
too, by a one-shot import hook, so the package does not import Keras itself.
"""

import sys

from msd_triplet.errors import AudioError, ConfigError, DataError, MsdTripletError

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "DataError", "MsdTripletError", "__version__"]


def _register_keras_objects() -> None:
    """Import the modules that register msd-triplet's layers, loss and metrics with Keras."""
    import msd_triplet.layers  # noqa: F401
    import msd_triplet.losses  # noqa: F401


class _AfterKerasImport:
    """Meta-path finder that runs :func:`_register_keras_objects` right after ``keras`` is executed.

    It finds nothing itself: it asks the other finders for the ``keras`` spec
    and wraps its loader, then removes itself. It stays installed until Keras
    really runs, because TensorFlow looks Keras up before importing it.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_keras = spec.loader.exec_module

            def exec_module(module):
                exec_keras(module)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                _register_keras_objects()

            spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_keras_objects()
elif not any(type(finder).__name__ == "_AfterKerasImport" for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())
