"""Does the demo data carry the structure it claims?  And how long does it take to make?

A baseline nobody here tuned -- mean/std of 20 MFCCs (librosa) + scikit-learn
logistic regression, on the 6 s segment at 3 s -- trained on half of the
albums and tested on the other half (no album in both) must predict

* the main genre,
* the mood set and the theme set (each set one class; test tracks whose set
  the training half lacks count as errors)

well above the majority class; the same with artist-disjoint halves (the
stricter test: no artist's timbre to lean on); and each mood and theme tag on
its own (one-vs-rest ROC AUC). Within an artist, the album must be
recognisable above chance (the album effect the album filter exists for).
The pair statistics of ``demo_info.json`` (identical tag sets across albums)
are printed beside. Labels come straight from the files with pandas/sqlite3
(not through our ingestion code). Run::

    python benchmarks/demo_data.py --out /tmp/demo            # generate + measure
    python benchmarks/demo_data.py --out data/demo --no-generate
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def load_labels(root: Path) -> pd.DataFrame:
    """One row per track that has audio and a tag in every set: path, artist, album, tag sets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = pd.read_hdf(root / "msd_amglabels_all.h5", "data")
    tags = tags[~tags.index.duplicated()]
    con = sqlite3.connect(root / "track_metadata.db")
    meta = pd.read_sql("SELECT track_id, artist_id, release FROM songs", con).set_index("track_id")
    con.close()
    paths = pd.read_csv(root / "audio_paths.csv").set_index("track_id")
    df = tags.join(meta, how="inner").join(paths, how="inner")
    for column in ("genres", "styles", "moods", "themes"):
        df = df[df[column].map(lambda v: isinstance(v, list) and len(v) > 0)]
    df["genre"] = [g[0] for g in df["genres"]]
    for column in ("moods", "themes"):
        df[column[:-1] + "_set"] = ["|".join(sorted(v)) for v in df[column]]
    df["album"] = df["artist_id"] + "/" + df["release"]
    return df


def mfcc_features(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of 20 MFCCs per file; returns (features [n, 40], ok mask [n])."""
    import librosa

    feats, ok = [], []
    for p in paths:
        try:
            with warnings.catch_warnings():  # librosa warns before falling back to audioread
                warnings.simplefilter("ignore")
                y, sr = librosa.load(p, sr=22050, mono=True, offset=3.0, duration=6.0)
            if y.size < 6 * sr or not np.any(y):
                raise ValueError("short or silent")
            m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
            feats.append(np.concatenate([m.mean(1), m.std(1)]))
            ok.append(True)
        except Exception:  # broken on purpose: counted, not fatal
            feats.append(np.zeros(40))
            ok.append(False)
    return np.array(feats), np.array(ok)


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))


def _set_task(x, y, tr, te) -> dict:
    """Accuracy of predicting the class y (a tag set) on te after training on tr, beside the majority class."""
    clf = _classifier().fit(x[tr], y[tr])
    majority = pd.Series(y[tr]).value_counts().index[0]
    return {
        "accuracy": round(float(np.mean(clf.predict(x[te]) == y[te])), 4),
        "majority_class": round(float(np.mean(y[te] == majority)), 4),
        "classes_in_training_half": int(len(set(y[tr]))),
        "test_tracks_with_a_set_unseen_in_training": int(np.sum(~np.isin(y[te], y[tr]))),
    }


def _halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of two halves of the groups (albums or artists), no group in both."""
    names = np.unique(groups)
    first = set(np.random.default_rng(seed).permutation(names)[: len(names) // 2])
    in_first = np.array([g in first for g in groups])
    return np.flatnonzero(in_first), np.flatnonzero(~in_first)


def _tag_aucs(x, tag_lists, tr, te) -> dict:
    """One-vs-rest ROC AUC per tag on te (tags present in both halves)."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for tag in sorted({t for tags in tag_lists for t in tags}):
        y = np.array([tag in tags for tags in tag_lists])
        if y[tr].all() or not y[tr].any() or y[te].all() or not y[te].any():
            continue
        clf = _classifier().fit(x[tr], y[tr])
        out[tag] = round(float(roc_auc_score(y[te], clf.predict_proba(x[te])[:, 1])), 3)
    return out


def baseline(root: Path, seed: int = 0) -> dict:
    """The MFCC + logistic regression baseline on album-disjoint (and artist-disjoint) halves."""
    df = load_labels(root)
    x, ok = mfcc_features([root / p for p in df["path"]])
    df, x = df[ok].reset_index(), x[ok]
    out = {"tracks": int(len(df)), "unreadable": int((~ok).sum())}
    for unit, column in (("album_disjoint", "album"), ("artist_disjoint", "artist_id")):
        tr, te = _halves(df[column].to_numpy(), seed)
        out[unit] = {
            "train_tracks": int(len(tr)),
            "test_tracks": int(len(te)),
            **{task: _set_task(x, df[task].to_numpy(), tr, te) for task in ("genre", "mood_set", "theme_set")},
        }
    tr, te = _halves(df["album"].to_numpy(), seed)
    out["tag_auc_album_disjoint"] = {s: _tag_aucs(x, list(df[s]), tr, te) for s in ("moods", "themes")}

    # album among the artist's own albums: half of each album's tracks train, half test
    rng = np.random.default_rng(seed)
    hits, chance, n = 0.0, 0.0, 0
    for _, g in df.groupby("artist_id"):
        albums = g["album"].value_counts()
        albums = albums[albums >= 4].index
        if len(albums) < 2:
            continue
        g = g[g["album"].isin(albums)]
        is_test = np.zeros(len(g), bool)
        for alb in albums:
            idx = np.flatnonzero(g["album"].to_numpy() == alb)
            is_test[rng.permutation(idx)[: len(idx) // 2]] = True
        xa, ya = x[g.index.to_numpy()], g["album"].to_numpy()
        clf = _classifier().fit(xa[~is_test], ya[~is_test])
        hits += float(np.sum(clf.predict(xa[is_test]) == ya[is_test]))
        chance += is_test.sum() / len(albums)
        n += is_test.sum()
    out["album_within_artist"] = {
        "accuracy": round(hits / max(n, 1), 4),
        "chance": round(chance / max(n, 1), 4),
        "test_tracks": int(n),
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/msd-triplet-demo"))
    ap.add_argument("--tracks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-generate", action="store_true")
    args = ap.parse_args(argv)

    from msd_triplet import synthetic

    if not args.no_generate:
        kw = {k: v for k, v in (("tracks", args.tracks), ("seed", args.seed)) if v is not None}
        summary = synthetic.make_demo_data(args.out, force=True, **kw)
        size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
        print(
            f"generated {summary.n_tracks} tracks ({summary.n_artists} artists, {summary.n_albums} albums) "
            f"in {summary.seconds:.1f} s, {size / 2**20:.0f} MiB, into {args.out}"
        )
    t = time.perf_counter()
    result = baseline(args.out)
    result["baseline_seconds"] = round(time.perf_counter() - t, 1)
    info = json.loads((args.out / "demo_info.json").read_text())
    result["identical_set_pairs_from_different_albums"] = {
        s: f["identical_pairs_from_different_albums"] for s, f in info["statistics"]["facets"].items()
    }
    import librosa
    import sklearn

    result["versions"] = {
        "librosa": librosa.__version__,
        "scikit-learn": sklearn.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
