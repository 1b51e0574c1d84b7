"""MM-IMDb (Arevalo et al. 2017) from the raw archive: movie posters and plots, 23-genre multi-label targets.

Provenance (corpora.md section 1): ``mmimdb.tar.gz`` from archive.org (``johnarevalo/gmu-mmimdb`` README)
untars to ``mmimdb/dataset/<imdb id>.json`` (the IMDbPY movie dump: ``plot`` a list of strings, ``genres`` a
list of strings, ...) + ``<imdb id>.jpeg`` (the poster) and ``mmimdb/split.json`` (``{"train", "dev", "test"}``
id lists; "dev" is our "valid"). The root may be the ``mmimdb`` folder or its parent.

Canonical sample: ``image`` (the poster, RGB; source JPEG bytes or resized once, see :mod:`mmdata.modalities.image`),
``text_plot`` (one plot: the longest, as GMU's ``make_dataset.py`` and MMBT's converter pick, or the first, as
MMF does; reader option ``plot``) and ``label`` (float32 multi-hot over :data:`GENRES`, the 23 most frequent
genres in GMU's frequency order). Other IMDb genres (News, Reality-TV, ...) are dropped and counted as
``dropped_genre:<name>`` repairs, any other genre string as ``unknown_genre:<name>`` (GMU's builder and MMF's
vocabulary targets ignore genres outside their label set and keep the movie); a movie left with none of the 23,
or lacking its poster, plot or genres, is skipped with a reason. An id listed twice (in one split or two) is kept once, at its first listing (train, dev, test).
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, inside_root, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import ConfigError, FileError, SampleError
from mmdata.modalities import image as image_io
from mmdata.modalities import text as text_io
from mmdata.types import Features, Field, Sample, make_key

NAME = "mmimdb"
ARCHIVE = "https://archive.org/download/mmimdb/mmimdb.tar.gz (johnarevalo/gmu-mmimdb README)"
#: The 23 genres of GMU's HDF5 (``n_classes: 23``), most frequent first.
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir")
#: The other genres IMDb assigns; dropped (and counted) when present. Anything else is an unknown label.
RARE_GENRES = ("Adult", "Game-Show", "News", "Reality-TV", "Talk-Show")
#: Our split -> the key of split.json.
SPLIT_KEYS = {"train": "train", "valid": "dev", "test": "test"}
PLOTS = ("longest", "first")
DEFAULT_IMAGE_SIZE = 64


def _base(root: str | Path) -> Path:
    """The folder holding ``split.json`` and ``dataset/`` (the root or its ``mmimdb`` child)."""
    base = require_root(root, NAME)
    for candidate in (base, base / "mmimdb"):
        if (candidate / "split.json").is_file() and (candidate / "dataset").is_dir():
            return candidate
    raise ConfigError(f"{NAME}: no split.json + dataset/ under {base} or {base / 'mmimdb'} (expected the untarred "
                      f"{ARCHIVE})")


def _split_ids(base: Path) -> dict[str, list[str]]:
    """split.json as our split -> list of id strings (file order)."""
    try:
        data = text_io.read_json(base / "split.json")
    except SampleError as err:
        raise ConfigError(f"{NAME}: unreadable {base / 'split.json'}: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in SPLIT_KEYS.values()):
        raise ConfigError(f"{NAME}: {base / 'split.json'} must map 'train', 'dev' and 'test' to id lists")
    return {split: [str(i) for i in data[key]] for split, key in SPLIT_KEYS.items()}


def _check_options(plot: str, image_size: Any) -> image_io.Size | None:
    if plot not in PLOTS:
        raise ConfigError(f"{NAME}: unknown plot choice {plot!r}; valid: {', '.join(PLOTS)}")
    return image_io.parse_size(image_size, NAME)


def features(root: str | Path, *, plot: str = "longest", image_size: Any = DEFAULT_IMAGE_SIZE) -> Features:
    """The schema: poster, one plot and the 23-genre multi-hot label."""
    size = _check_options(plot, image_size)
    return {
        "image": image_io.image_field(size, "jpg", "movie poster (dataset/<id>.jpeg)"),
        "text_plot": Field("str", (), "txt", description=f"plot summary, the {plot} of the JSON's 'plot' list"),
        "label": Field("float32", (len(GENRES),), "npy", classes=GENRES, value_range=(0.0, 1.0),
                       description="multi-hot genres over the 23 most frequent (GMU order); rarer ones dropped"),
    }


def _find(dataset: Path, movie: str, ext: str) -> Path:
    """``dataset/<id>.<ext>``, trying 7- and 8-digit zero padding when the listed id has another width.

    Raises:
        FileError: ``outside_root`` when the id (a split.json string) or a symlink leads out of the release.
    """
    # Contained in the release folder, not dataset/ alone, so a symlinked dataset/ cannot lead out either.
    path = inside_root(dataset.parent, dataset.name, f"{movie}.{ext}")
    if path.exists() or not movie.isdigit():
        return path
    for width in (7, 8):
        padded = inside_root(dataset.parent, dataset.name, f"{int(movie):0{width}d}.{ext}")
        if padded.exists():
            return padded
    return path


def _candidates(movie: str, ext: str) -> Iterator[str]:
    """The file names :func:`_find` tries, in its order (the padded ones only after the listed one)."""
    yield f"{movie}.{ext}"
    for width in (7, 8):
        yield f"{int(movie):0{width}d}.{ext}"


def _finder(dataset: Path) -> Callable[[str, str], Path]:
    """:func:`_find` for the many ids of a split list, with what is the same for all of them done once: the
    release's dataset folder resolved inside the release, a plain id (no separator, no ``..``) whose candidate
    is a regular file or absent then needs one ``lstat``, not a path resolution (parts read every id listed
    before them). Any other case (a symlink, a folder, an odd id) goes through :func:`_find` itself."""
    try:
        inside = dataset.resolve().is_relative_to(dataset.parent.resolve())
    except (OSError, RuntimeError):
        inside = False

    def find(movie: str, ext: str) -> Path:
        if not inside or not isinstance(movie, str) or not movie or any(c in movie for c in "/\\\0") \
                or movie.startswith("..") or movie[1:2] == ":":
            return _find(dataset, movie, ext)
        for at, name in enumerate(_candidates(movie, ext)):
            try:
                mode = os.lstat(dataset / name).st_mode
            except FileNotFoundError:
                if at == 0 and not movie.isdigit():  # as _find: no padded spellings to try
                    return dataset / name
                continue
            except OSError:
                return _find(dataset, movie, ext)
            return dataset / name if stat.S_ISREG(mode) else _find(dataset, movie, ext)
        return dataset / f"{movie}.{ext}"
    return find


def _stem(find: Callable[[str, str], Path], movie: str) -> str:
    """The stem of the JSON an id names ("0012345" for "12345"), or the id itself when it leads outside."""
    try:
        return find(movie, "json").stem
    except FileError:
        return movie


def sources(root: str | Path, *, plot: str = "longest", image_size: Any = DEFAULT_IMAGE_SIZE) -> list[Path]:
    """split.json and every existing JSON and poster of the listed ids."""
    base = _base(root)
    ids = sorted({m for split in _split_ids(base).values() for m in split})
    find, files = _finder(base / "dataset"), []
    for movie in ids:
        for ext in ("json", "jpeg"):
            try:
                files.append(find(movie, ext))
            except FileError:  # an id leading out of the release: iter_samples reports it as a Skip
                continue
    return [base / "split.json", *(p for p in files if p.is_file())]


def describe(root: str | Path, *, plot: str = "longest", image_size: Any = DEFAULT_IMAGE_SIZE) -> str:
    """Layout, id counts per split and the options, in words."""
    base = _base(root)
    counts = ", ".join(f"{k} {len(v)}" for k, v in _split_ids(base).items())
    return f"MM-IMDb raw archive layout at {base} (split.json ids: {counts}); plot: {plot}; image_size: {image_size}"


def _plot(movie: dict, choice: str, repairs: list[str]) -> str:
    plots = movie.get("plot")
    if isinstance(plots, str):
        plots = [plots]
    if not isinstance(plots, list) or not plots:
        raise SampleError("missing_key", "json: no 'plot' list")
    texts = [p for p in plots if isinstance(p, str) and p.strip()]
    if not texts:
        raise SampleError("empty_text", "json: every 'plot' entry is empty")
    # max() keeps the first of equally long plots, as numpy's argmax in GMU's builder does.
    return text_io.clean_text(max(texts, key=len) if choice == "longest" else texts[0], "text_plot", repairs)


def _genres(movie: dict) -> tuple[np.ndarray, list[str]]:
    """(multi-hot [23] float32, repair codes of the genres dropped); SampleError for missing or no kept genres.

    A genre outside the 23 is dropped and counted, never a reason to lose the movie: ``dropped_genre:<name>``
    for IMDb's rarer genres, ``unknown_genre:<name>`` for any other entry (a newer IMDb genre, a typo).
    """
    genres = movie.get("genres")
    if not isinstance(genres, list) or not genres:
        raise SampleError("missing_key", "json: no 'genres' list")
    hot, dropped = np.zeros(len(GENRES), np.float32), []
    for genre in genres:
        if genre in GENRES:
            hot[GENRES.index(genre)] = 1.0
        else:
            kind = "dropped_genre" if genre in RARE_GENRES else "unknown_genre"
            dropped.append(f"{kind}:{str(genre)[:40]}")
    if not hot.any():
        raise SampleError("no_standard_genre", f"json: no genre among the 23 kept (dropped {dropped})")
    return hot, dropped


def _movie(dataset: Path, movie: str, key: str, plot: str, size: image_io.Size | None) -> Sample:
    """One movie as a sample; SampleError names the first problem (JSON first, then the poster)."""
    data = text_io.read_json(_find(dataset, movie, "json"))
    if not isinstance(data, dict):
        raise SampleError("schema", f"json: expected an object, got {type(data).__name__}")
    fixed: list[str] = []
    text, (label, dropped) = _plot(data, plot, fixed), _genres(data)
    poster = _find(dataset, movie, "jpeg")
    image, repairs = image_io.load_image(image_io.read_file(poster, "image"), "jpg", size)
    return {"__key__": key, "image": image, "text_plot": text, "label": label, SOURCE: str(poster),
            REPAIRS: (*repairs, *dropped, *fixed)}


def iter_samples(root: str | Path, split: str, *, plot: str = "longest",
                 image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """Movies of one split in split.json order, one Sample or Skip per listed id.

    Args:
        root: the untarred ``mmimdb`` folder (or its parent).
        split: "train", "valid" (split.json "dev") or "test".
        plot: "longest" (GMU, MMBT) or "first" (MMF) of the JSON's plot list.
        image_size: None keeps the JPEG bytes; an int or [height, width] resizes once (:mod:`mmdata.modalities.image`).

    Yields:
        ``{"__key__": "mmimdb/<split>/<id>", "image", "text_plot", "label" [23]}`` or a Skip.

    Raises:
        ConfigError: unknown split or option, missing root, split.json or dataset folder.
    """
    yield from iter_part(root, split, 0, None, plot=plot, image_size=image_size)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *, plot: str = "longest",
              image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end): the ids listed before
    ``start`` are only resolved to file names (duplicates), and only the part's JSONs and posters are read."""
    if split not in SPLIT_KEYS:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SPLIT_KEYS)}")
    size, base = _check_options(plot, image_size), _base(root)
    dataset, ids = base / "dataset", _split_ids(base)
    order = list(SPLIT_KEYS)
    # Ids are compared by the file they name ("12345" and "0012345" are one movie); a leak into a later
    # split is skipped there.
    find = _finder(dataset)
    earlier = {_stem(find, m): s for s in order[:order.index(split)] for m in ids[s]}
    seen: set[str] = set()
    for index, listed in enumerate(ids[split][:stop]):
        claim = _claim(find, split, listed, earlier, seen)
        if index < start:
            continue
        if isinstance(claim, Skip):
            yield claim
            continue
        movie, key, path = claim
        try:
            yield _movie(dataset, movie, key, plot, size)
        except SampleError as err:
            yield Skip(key, str(path), err.reason, str(err))


def _claim(find: Callable[[str, str], Path], split: str, listed: str, earlier: dict[str, str], seen: set[str]
           ) -> tuple[str, str, Path] | Skip:
    """(movie stem, key, JSON path) of a listed id, now claimed in ``seen``; or a Skip (outside, duplicate)."""
    try:
        path = find(listed, "json")
    except FileError as err:  # the id names a file outside the release: a counted skip, never read
        return Skip(_key(split, listed), str(err.path), err.reason, str(err))
    movie = path.stem if path.is_file() else listed
    key = _key(split, movie)
    if movie in seen or movie in earlier:
        where = SPLIT_KEYS[earlier.get(movie, split)]
        return Skip(key, str(path), "duplicate_id", f"id {listed} already listed in split.json {where}")
    seen.add(movie)
    return movie, key, path


def _key(split: str, movie: str) -> str:
    try:
        return make_key(NAME, split, movie)
    except ValueError:
        return make_key(NAME, split, "invalid-id")


def count_raw(root: str | Path, split: str, *, plot: str = "longest",
              image_size: Any = DEFAULT_IMAGE_SIZE) -> RawCount:
    """Ids listed under the split's key of split.json (each one Sample or Skip; no JSON or poster is read).

    Args:
        root, split, plot, image_size: as for :func:`iter_samples`.
    """
    _check_options(plot, image_size)
    base = _base(root)
    ids = _split_ids(base)[check_split(NAME, split, tuple(SPLIT_KEYS))]
    return raw_count(len(ids), "split.json id", [base, base / "dataset"])


CORPUS = Corpus(name=NAME, splits=tuple(SPLIT_KEYS), task="multilabel", features=features,
                iter_samples=iter_samples, sources=sources, describe=describe, count_raw=count_raw,
                iter_part=iter_part)
