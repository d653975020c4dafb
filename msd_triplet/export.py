"""Exporting a trained run: a TensorFlow SavedModel for serving, Keras embedding models for downstream work.

:func:`export_savedmodel` writes a folder that needs only TensorFlow (neither
msd-triplet nor Keras) to use::

    saved_model.pb, variables/, …  the SavedModel
    README.txt                     signatures, feature parameters, provenance, how to load it
    msd_triplet_config.yaml        the run's resolved config

It serves two signatures, each returning ``{"embedding": float32 [B, d]}``:

* ``serving_default`` = ``log_mel``: input ``log_mel`` float32 [B, 80, 130, 1],
  the features of the cache (:func:`msd_triplet.audio.log_mel`);
* ``waveform``: input ``waveform`` float32 [B, 132,300], the configured segment
  (6 s from 3 s) of mono 22,050 Hz audio (:func:`msd_triplet.audio.read_segment`);
  the log-mel is computed in the graph by :class:`msd_triplet.layers.LogMel`.

:func:`load_embedding_model` gives the Keras model of a run folder or
``.keras`` file cut at its representation, uncompiled, to freeze or fine-tune
inside a downstream model.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import keras

import msd_triplet
from msd_triplet import audio
from msd_triplet.config import Config, save_config
from msd_triplet.errors import DataError, MsdTripletError
from msd_triplet.fileio import atomic_write_text, sibling_temp
from msd_triplet.layers import LogMel
from msd_triplet.runfolder import RunFolder
from msd_triplet.runs import run_config

#: The signature that takes log-mel features; TensorFlow Serving's ``serving_default`` is the same function.
LOG_MEL = "log_mel"
#: The signature that takes raw audio.
WAVEFORM = "waveform"
#: Output key of both signatures.
EMBEDDING = "embedding"
#: Files written beside the SavedModel.
README = "README.txt"
CONFIG = "msd_triplet_config.yaml"


def export_savedmodel(
    run: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best", overwrite: bool = False
) -> Path:
    """Write the model of a run folder as a TensorFlow SavedModel with a log-mel and a waveform signature.

    Parameters
    ----------
    run : a run folder of :func:`msd_triplet.training.fit`
    out : the folder to create; written beside itself and renamed into place,
        so it never holds half an export
    checkpoint : ``best`` (falls back to ``last`` for a run without validation) or ``last``
    overwrite : replace an existing export in ``out``

    Returns
    -------
    out : Path

    Raises
    ------
    DataError
        ``run`` is not a run folder, or has no checkpoint; ``out`` is under a file.
    MsdTripletError
        ``out`` is a file, a non-empty folder (without ``overwrite``), a
        folder that holds no export (with ``overwrite``), or the run itself.
    """
    import tensorflow as tf

    from msd_triplet.training import load_run_model

    run, out = Path(run), Path(out)
    config = run_config(run)
    _check_target(out, run, overwrite)
    register_custom_objects()
    model = load_run_model(run, checkpoint)
    bands, frames = audio.feature_shape(config.features)
    samples = audio.SegmentSpec.from_config(config.features).samples
    to_log_mel = LogMel.from_features(config.features, name="log_mel")

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint added is also written as ``serving_default``. The TensorSpec names
    # become the signatures' input names; returning a dict names the output.
    archive.add_endpoint(
        LOG_MEL,
        lambda log_mel: {EMBEDDING: model(log_mel, training=False)},
        input_signature=[tf.TensorSpec((None, bands, frames, 1), tf.float32, name=LOG_MEL)],
    )
    archive.add_endpoint(
        WAVEFORM,
        lambda waveform: {EMBEDDING: model(to_log_mel(waveform), training=False)},
        input_signature=[tf.TensorSpec((None, samples), tf.float32, name=WAVEFORM)],
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling_temp(out, ".tmp", folder=True)  # 0o777 & ~umask, as mkdir gives (mkdtemp: always 0700)
    try:
        archive.write_out(str(tmp), verbose=False)
        save_config(config, tmp / CONFIG)
        atomic_write_text(
            tmp / README,
            _readme(config, run, loaded_checkpoint(run, checkpoint).name, out, int(model.output_shape[-1])),
        )
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def register_custom_objects() -> None:
    """Register msd-triplet's layer, loss and metrics with Keras, before a checkpoint is loaded.

    A run's checkpoints are saved compiled, so loading one needs
    :class:`~msd_triplet.losses.LsiTripletLoss` and its metrics known to Keras.
    ``import msd_triplet`` already arranges this once Keras is imported (see
    the package docstring); the call makes it explicit and independent of
    import order. Cheap and idempotent.
    """
    msd_triplet._register_keras_objects()


def _check_target(out: Path, run: Path, overwrite: bool) -> None:
    """Refuse to write over a file, a folder that is not empty (unless an export and ``overwrite``) or the run,
    or under a file (DataError)."""
    if out.is_file():
        raise MsdTripletError(f"{out}: is a file; give a folder to export into")
    # out's nearest existing ancestor must be a folder: mkdir(parents=True, exist_ok=True) under a file
    # fails with EEXIST (the file itself) or ENOTDIR (below it), which would name the wrong thing
    blocker = next((p for p in out.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        under = "" if blocker == out.parent else f" ({blocker} is not a folder)"
        raise DataError(f"{out}: its parent {out.parent} is not a folder{under}; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise MsdTripletError(
            f"{out}: exists and is not empty; choose another folder, or replace the "
            "export in it with overwrite=True (--overwrite)"
        )
    resolved = out.resolve()
    if resolved == run.resolve() or resolved in run.resolve().parents:
        raise MsdTripletError(f"{out}: holds the run {run}; export into another folder")
    if not ((out / "saved_model.pb").is_file() and (out / CONFIG).is_file()):
        raise MsdTripletError(
            f"{out}: does not hold an msd-triplet export (no saved_model.pb and {CONFIG}); "
            "refusing to replace it, choose another folder"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``; an existing ``out`` is moved aside first, then deleted."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)  # put the earlier export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def loaded_checkpoint(run: str | os.PathLike, checkpoint: str = "best") -> Path:
    """The file :func:`msd_triplet.training.load_run_model` loads: ``checkpoints/<checkpoint>.keras``,
    ``best`` falling back to ``last`` (a run without validation). The file may not exist.
    The same as :meth:`msd_triplet.runfolder.RunFolder.loaded_checkpoint`."""
    return RunFolder(run).loaded_checkpoint(checkpoint)


def _readme(config: Config, run: Path, checkpoint: str, out: Path, dim: int) -> str:
    import tensorflow as tf

    from msd_triplet import __version__

    f = config.features
    bands, frames = audio.feature_shape(f)
    samples = audio.SegmentSpec.from_config(f).samples
    output = "unit length (L2-normalised)" if config.model.l2_normalize else "not normalised (Dense + ELU)"
    return f"""\
msd-triplet embedding model (TensorFlow SavedModel)

Made from run {run.resolve()} (config "{config.name}", checkpoint checkpoints/{checkpoint}),
msd-triplet {__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}.
The run's resolved config is in {CONFIG}.

Signatures (each returns a dict with one entry, "{EMBEDDING}"):
  serving_default = {LOG_MEL}
    input   {LOG_MEL:<10} float32 [batch, {bands}, {frames}, 1]   log-mel spectrogram (mel bands x frames x 1)
    output  {EMBEDDING:<10} float32 [batch, {dim}]   {output}
  {WAVEFORM}
    input   {WAVEFORM:<10} float32 [batch, {samples}]   mono audio at {f.sample_rate} Hz, the segment below
    output  {EMBEDDING:<10} float32 [batch, {dim}]   {output}
  The log-mel of the {WAVEFORM} signature is computed inside the graph, with the parameters below.
  Both are also methods of the loaded object: model.{LOG_MEL}(x), model.{WAVEFORM}(x).

Features (what the inputs must be):
  audio       mono (mean of the channels), resampled to {f.sample_rate} Hz (soxr "HQ", as librosa.load)
  segment     {f.duration:g} s from offset {f.offset:g} s = {samples} samples
  STFT        n_fft {f.n_fft}, hop {f.hop_length}, periodic Hann window, centred ({f.n_fft // 2} zeros each side)
              -> {frames} frames; power spectrum; FFT in {f.precision}
  mel         {f.n_mels} bands, fmin {f.fmin:g} Hz, fmax {f.fmax:g} Hz, Slaney mel scale and area
              normalisation (librosa's default filter bank)
  log         natural log of (mel power + {f.log_floor:g})
  = np.log(librosa.feature.melspectrogram(y=y, sr={f.sample_rate}, n_fft={f.n_fft}, hop_length={f.hop_length},
           n_mels={f.n_mels}, fmin={f.fmin:g}, fmax={f.fmax:g}) + {f.log_floor:g})
  with y = librosa.load(path, sr={f.sample_rate}, mono=True, offset={f.offset:g}, duration={f.duration:g})[0]

Load it in plain TensorFlow:
  import numpy as np, tensorflow as tf
  model = tf.saved_model.load("{out.resolve()}")
  waveform = np.zeros((1, {samples}), np.float32)  # your audio, as above
  embedding = model.signatures["{WAVEFORM}"]({WAVEFORM}=tf.constant(waveform))["{EMBEDDING}"].numpy()

In Keras: keras.layers.TFSMLayer("{out.resolve()}", call_endpoint="{WAVEFORM}").
"""


def load_embedding_model(
    run_or_path: str | os.PathLike, *, checkpoint: str = "best", normalized: bool = True
) -> keras.Model:
    """The trained DPNN as an uncompiled Keras model whose output is the embedding.

    Parameters
    ----------
    run_or_path : a run folder (its ``checkpoint`` is loaded) or a ``.keras`` file
    checkpoint : ``best`` or ``last``, for a run folder
    normalized : True: the L2-normalised embedding [B, d] (the space the
        triplet loss and the evaluation use; added if the model has no
        ``l2_normalize`` layer). False: the output of the ``embedding`` layer
        (Dense + ELU), the representation for downstream classifiers.

    Returns
    -------
    keras.Model: ``log_mel`` float32 [B, bands, frames, 1] → float32 [B, d],
        sharing its layers with the loaded model; set ``trainable = False`` to
        freeze it (batch normalisation then runs in inference mode).

    Raises
    ------
    MsdTripletError
        Not a run folder or ``.keras`` file, an exported SavedModel (not a
        Keras model), or a model without an ``embedding`` layer.
    """
    from msd_triplet.model import embedding_model
    from msd_triplet.training import load_run_model

    register_custom_objects()
    source = Path(run_or_path)
    if source.is_dir():
        if (source / "saved_model.pb").is_file():
            raise MsdTripletError(
                f"{source}: an exported SavedModel, not a Keras model; load it with "
                f"tf.saved_model.load, or keras.layers.TFSMLayer(path, call_endpoint={LOG_MEL!r}), "
                "or give the run folder it was exported from"
            )
        run_config(source)  # DataError naming the folder when it is not a run
        model = load_run_model(source, checkpoint)
    elif source.suffix == ".keras" and source.is_file():
        model = keras.models.load_model(source, compile=False)
    else:
        raise MsdTripletError(f"{source}: not a model; give a run folder (with config.yaml) or a .keras file")
    names = {layer.name for layer in model.layers}
    if "embedding" not in names:
        raise MsdTripletError(f"{source}: model {model.name!r} has no layer named 'embedding'; not a DPNN")
    if not normalized:
        return embedding_model(model)
    if "l2_normalize" in names:
        output = model.get_layer("l2_normalize").output
    else:
        output = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(model.get_layer("embedding").output)
    # A new functional model over the same layers: uncompiled, whatever the checkpoint held.
    return keras.Model(model.input, output, name=f"{model.name}_embedding_l2")
