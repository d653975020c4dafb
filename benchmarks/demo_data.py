"""Does the demo data carry the structure it claims?  And how long does it take to make?

A baseline we did not write -- mean/std MFCCs (librosa) + scikit-learn logistic
regression on the 6 s segment at 3 s -- must predict

* the main genre of tracks by *unseen artists* well above chance, but not perfectly;
* the album of a track among the albums of its own artist above chance (the
  album effect: production colour, not the artist's timbre, tells them apart);
* whether the first mood tag is of high or low arousal, above chance.

Labels come straight from the files with pandas/sqlite3 (not through our
ingestion code). Run::

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
    """One row per track with audio: path, artist, album, main genre, first mood."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = pd.read_hdf(root / "msd_amglabels_all.h5", "data")
    tags = tags[~tags.index.duplicated()]
    con = sqlite3.connect(root / "track_metadata.db")
    meta = pd.read_sql("SELECT track_id, artist_id, release FROM songs", con).set_index("track_id")
    con.close()
    paths = pd.read_csv(root / "audio_paths.csv").set_index("track_id")
    df = tags.join(meta, how="inner").join(paths, how="inner")
    df["genre"] = [g[0] for g in df["genres"]]
    df["mood"] = [m[0] if isinstance(m, list) else None for m in df["moods"]]
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


def _fit_score(x_tr, y_tr, x_te, y_te, balanced: bool = False) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_tr, y_tr)
    if balanced:
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(y_te, clf.predict(x_te)))
    return float(np.mean(clf.predict(x_te) == y_te))


def baseline(root: Path, seed: int = 0) -> dict:
    """Accuracy and chance for genre (unseen artists), album (within artist), mood quadrant."""
    from sklearn.model_selection import GroupShuffleSplit

    df = load_labels(root)
    x, ok = mfcc_features([root / p for p in df["path"]])
    df, x = df[ok], x[ok]
    out = {"tracks": int(len(df)), "unreadable": int((~ok).sum())}

    # genre, artist-disjoint split
    tr, te = next(GroupShuffleSplit(1, test_size=0.3, random_state=seed).split(x, groups=df["artist_id"]))
    y = df["genre"].to_numpy()
    majority = pd.Series(y[tr]).value_counts().index[0]
    out["genre"] = {"accuracy": _fit_score(x[tr], y[tr], x[te], y[te]),
                    "chance_majority": float(np.mean(y[te] == majority)),
                    "balanced_accuracy": _fit_score(x[tr], y[tr], x[te], y[te], balanced=True),
                    "chance_balanced": 1.0 / len(set(y[te])),
                    "classes": int(len(set(y)))}

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
        xa = x[df.index.get_indexer(g.index)]
        ya = g["album"].to_numpy()
        acc = _fit_score(xa[~is_test], ya[~is_test], xa[is_test], ya[is_test])
        hits += acc * is_test.sum()
        chance += is_test.sum() / len(albums)
        n += is_test.sum()
    out["album_within_artist"] = {"accuracy": hits / max(n, 1), "chance": chance / max(n, 1),
                                  "test_tracks": int(n)}

    # mood: high or low arousal of the first mood tag
    from msd_triplet.synthetic import _MOODS  # only the coordinates of the tag names

    has = df["mood"].notna().to_numpy()
    quad = np.array([_MOODS[m][1] > 0 for m in df["mood"][has]])
    xm, gm = x[has], df["artist_id"][has]
    tr, te = next(GroupShuffleSplit(1, test_size=0.3, random_state=seed).split(xm, groups=gm))
    out["mood_arousal"] = {"balanced_accuracy": _fit_score(xm[tr], quad[tr], xm[te], quad[te], balanced=True),
                            "chance": 0.5, "share_high": float(quad.mean())}
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
        print(f"generated {summary.n_tracks} tracks ({summary.n_artists} artists, {summary.n_albums} albums) "
              f"in {summary.seconds:.1f} s, {size / 2**20:.0f} MiB, into {args.out}")
    t = time.perf_counter()
    result = baseline(args.out)
    result["baseline_seconds"] = round(time.perf_counter() - t, 1)
    import librosa
    import sklearn

    result["versions"] = {"librosa": librosa.__version__, "scikit-learn": sklearn.__version__,
                          "python": sys.version.split()[0]}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
