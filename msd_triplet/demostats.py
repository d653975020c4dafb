"""What a drawn demo catalogue realises: shared tag sets, their dependence on genre, cross-set LSI topics.

:func:`world_statistics` runs on the catalogue (no audio) and its result is
written to ``demo_info.json`` beside the generator's parameters, so every
design choice of the demo world can be checked against what it produced.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SETS = ("genres", "styles", "moods", "themes")


def usable_tracks(catalogue: Sequence) -> list:
    """Tracks that can pass the intersection filter: audio not broken, a tag in every set."""
    return [t for t in catalogue if not t.broken and all(t.tags[s] for s in SETS)]


def pair_statistics(sets: Sequence, albums: Sequence, artists: Sequence) -> dict:
    """Track pairs with an identical tag set, and how many of them cross albums and artists.

    Parameters
    ----------
    sets : hashable tag set per track; albums, artists : id per track (same length)
    """
    frame = pd.DataFrame({"set": list(sets), "album": list(albums), "artist": list(artists)})

    def pairs(columns) -> int:
        n = frame.groupby(columns, sort=False).size().to_numpy(np.int64)
        return int((n * (n - 1) // 2).sum())

    total = pairs(["set"])
    same_album, same_artist = pairs(["set", "album"]), pairs(["set", "artist"])
    n = len(frame)
    albums_per_set = frame.groupby("set")["album"].nunique()
    artists_per_album_set = frame.drop_duplicates("album").groupby("set")["artist"].nunique()
    shared = frame.drop_duplicates("album")["set"].map(artists_per_album_set) > 1
    return {
        "distinct_sets": int(frame["set"].nunique()),
        "albums_per_set_mean": round(float(albums_per_set.mean()), 2),
        "albums_per_set_max": int(albums_per_set.max()),
        "share_of_albums_whose_set_another_artist_has": round(float(shared.mean()), 4),
        "identical_pairs": total,
        "identical_pairs_from_different_albums": round(1 - same_album / total, 4) if total else None,
        "identical_pairs_from_different_artists": round(1 - same_artist / total, 4) if total else None,
        "chance_of_identical_set": round(2 * total / (n * (n - 1)), 5) if n > 1 else None,
    }


def _nmi(a: Sequence, b: Sequence) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return round(
        float(normalized_mutual_info_score(pd.factorize(pd.Series(list(a)))[0], pd.factorize(pd.Series(list(b)))[0])), 4
    )


def cross_set_topics(tracks: Sequence, k: int = 10, top: int = 8) -> dict:
    """LSI of the binary tag × track matrix of all four sets: how many of the first ``k`` topics
    have their ``top`` strongest tags (by absolute loading) in two or more tag sets."""
    tags = [(s, tag) for s in SETS for tag in sorted({x for t in tracks for x in t.tags[s]})]
    index = {tag: i for i, tag in enumerate(tags)}
    w = np.zeros((len(tags), len(tracks)), np.float32)
    for j, t in enumerate(tracks):
        for s in SETS:
            w[[index[(s, x)] for x in t.tags[s]], j] = 1.0
    u, _, _ = np.linalg.svd(w, full_matrices=False)
    spans, examples = [], {}
    for topic in range(min(k, u.shape[1])):
        strongest = np.argsort(-np.abs(u[:, topic]))[:top]
        sets = sorted({tags[i][0] for i in strongest}, key=SETS.index)
        spans.append(len(sets))
        examples[str(topic)] = [f"{tags[i][1]} ({tags[i][0]})" for i in strongest]
    return {
        "topics": len(spans),
        "spanning_two_or_more_sets": int(sum(n >= 2 for n in spans)),
        "strongest_tags": examples,
    }


def world_statistics(catalogue: Sequence) -> dict:
    """Realised statistics of a catalogue, over the tracks that can pass the intersection filter."""
    tracks = usable_tracks(catalogue)
    albums = [t.album for t in tracks]
    artists = [t.artist_id for t in tracks]
    main_genre = [t.tags["genres"][0] for t in tracks]
    facets = {}
    for s in SETS:
        sets = [t.tags[s] for t in tracks]
        counts = pd.Series([x for tags in sets for x in tags]).value_counts()
        facets[s] = {
            "tags": int(len(counts)),
            "tags_per_track_mean": round(float(np.mean([len(x) for x in sets])), 2),
            "most_common_tag_share": round(float(counts.iloc[0] / len(tracks)), 4),
            **pair_statistics(sets, albums, artists),
        }
    moods, themes, styles = ([t.tags[s] for t in tracks] for s in ("moods", "themes", "styles"))
    return {
        "usable_tracks": len(tracks),
        "usable_albums": len(set(albums)),
        "usable_artists": len(set(artists)),
        "facets": facets,
        "normalised_mutual_information": {
            "main_genre_vs_mood_set": _nmi(main_genre, moods),
            "main_genre_vs_theme_set": _nmi(main_genre, themes),
            "style_set_vs_mood_set": _nmi(styles, moods),
            "mood_set_vs_theme_set": _nmi(moods, themes),
        },
        "lsi_all_four_sets": cross_set_topics(tracks),
    }
