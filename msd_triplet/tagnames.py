"""The names of the tag sets and of their combinations, shared by the config and the LSI.

A module of its own so that :mod:`msd_triplet.config` can check combination
names without importing :mod:`msd_triplet.lsi` (which imports the config).
"""

from __future__ import annotations

import itertools
from typing import Sequence

from msd_triplet.errors import ConfigError

TAG_SETS: tuple[str, ...] = ("genres", "styles", "moods", "themes")
"""The four AllMusic tag sets, in the order the paper names combinations."""


def combinations() -> list[str]:
    """The 15 tag-set combinations of the paper, named like ``genres-styles``: singles first."""
    return ["-".join(c) for r in range(1, len(TAG_SETS) + 1) for c in itertools.combinations(TAG_SETS, r)]


def parse_combination(name: str | Sequence[str]) -> tuple[str, ...]:
    """``"moods-genres"`` or ``("moods", "genres")`` → ``("genres", "moods")`` (canonical order).

    ConfigError for an unknown or repeated set name.
    """
    parts = name.split("-") if isinstance(name, str) else list(name)
    unknown = [p for p in parts if p not in TAG_SETS]
    if not parts or unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"tag-set combination {name!r}: use names from {', '.join(TAG_SETS)} joined by '-', "
            f"each once (e.g. genres-styles-moods); {'unknown: ' + ', '.join(unknown) if unknown else ''}".rstrip("; ")
        )
    return tuple(s for s in TAG_SETS if s in parts)


def combination_name(sets: Sequence[str]) -> str:
    return "-".join(parse_combination(sets))
