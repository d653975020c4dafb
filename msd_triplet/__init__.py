"""msd-triplet: music representations from a triplet network whose triplets are
chosen by the LSI relatedness of expert tags (Schindler & Knees, CBMI 2019).

Importing the package is cheap: no TensorFlow, librosa or file I/O happens
here. Import the stage you need, e.g. ``from msd_triplet import tagsets``.
"""

from msd_triplet.errors import AudioError, ConfigError, DataError, MsdTripletError

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "DataError", "MsdTripletError", "__version__"]
