"""Synthetic mini MM-IMDb in the raw archive's layout, with genres that only poster and plot together reveal.

Layout written under ``out`` (corpora.md section 1; the archive untars to ``mmimdb/``)::

    mmimdb/dataset/<7-digit imdb id>.json   IMDbPY-style dump: "plot" (list of 1-3 strings), "genres" (list),
                                            title, year, kind, votes, rating, cover url, certificates, ...
    mmimdb/dataset/<7-digit imdb id>.jpeg   poster, JPEG of varying size (about 2:3)
    mmimdb/split.json                       {"train": [ids], "dev": [ids], "test": [ids]}

Genres: 1-3 per movie from the 23 of GMU's list with frequencies falling in its order (Drama most, Film-Noir
least), and on ~6% of movies one more rare IMDb genre (News, Reality-TV, ...) that the reader drops and counts.

Signal: the even-ranked genres (Drama, Romance, Crime, ...) show on the poster only, each as its own glyph (one
of four colours x three shapes) at a random place; the odd-ranked ones (Comedy, Thriller, Action, ...) show in
the plot only, each through two of its four keywords among filler words (one plot in five also carries a
stray keyword of another genre). A poster model can thus find only the first half of the genres, a plot model
only the second, and late fusion both. Every plot of a movie carries its cues; the longest has the most
filler, and the first is not always the longest.

All draws come from ``make_rng(seed, "mmimdb", ...)``; the same arguments write byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

#: GMU's 23 genres in frequency order (the raw files hold these strings).
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir")
RARE = ("News", "Reality-TV", "Talk-Show", "Adult")
COLOURS = ((230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40))
SHAPES = ("circle", "square", "triangle")
#: Plot keywords of the plot-cued (odd-ranked) genres, in GENRES[1::2] order.
KEYWORDS = (("laugh", "joke", "hilarious", "prank"), ("suspense", "chase", "hostage", "conspiracy"),
            ("explosion", "fight", "mercenary", "rescue"), ("ghost", "haunted", "blood", "demon"),
            ("clue", "detective", "vanish", "secret"), ("wizard", "dragon", "kingdom", "spell"),
            ("born", "career", "legacy", "memoir"), ("ancient", "empire", "century", "revolution"),
            ("cartoon", "animated", "talking", "toy"), ("cowboy", "sheriff", "saloon", "outlaw"),
            ("brief", "minute", "vignette", "sketch"))
FILLER = ("the", "a", "man", "woman", "family", "city", "finds", "when", "his", "her", "new", "old", "friend",
          "must", "after", "years", "town", "story", "two", "young", "home", "world", "night", "journey", "with",
          "their", "life", "meets", "during", "small")


def generate(out: Path, *, seed: int = 0, train: int = 480, valid: int = 80, test: int = 240) -> Path:
    """Write a synthetic MM-IMDb under ``out/mmimdb``.

    Args:
        out: the folder to create (the archive's parent folder).
        seed: base seed.
        train, valid, test: movies listed under the keys "train", "dev" (the release's name of the validation
            split; ``valid`` everywhere in mmdata) and "test" of split.json.

    Returns:
        ``out``, the root for :mod:`mmdata.corpora.mmimdb` (which finds ``mmimdb/`` under it).

    Raises:
        ValueError: a split without movies.
    """
    if min(train, valid, test) < 1:
        raise ConfigError(f"every split needs >= 1 movie, got {train}, {valid}, {test}")
    dataset = Path(out) / "mmimdb" / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "dev": valid, "test": test}
    ids = make_rng(seed, "mmimdb", "ids").choice(np.arange(1, 10**7), sum(counts.values()), replace=False)
    names = [f"{int(i):07d}" for i in ids]
    split, start = {}, 0
    for key, n in counts.items():
        rng = make_rng(seed, "mmimdb", key)
        split[key] = names[start:start + n]
        for movie in split[key]:
            _write_movie(dataset, movie, rng)
        start += n
    (dataset.parent / "split.json").write_text(json.dumps(split), encoding="utf-8")
    return Path(out)


def _genres(rng: np.random.Generator) -> list[int]:
    """1-3 genre ranks, drawn without replacement with weights falling in GMU's frequency order."""
    # Python's ** (libm pow), not numpy's: numpy has its own AVX-512 power, whose roundings differ by CPU.
    weights = np.array([1.0 / k ** 0.7 for k in range(1, len(GENRES) + 1)])
    count = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    return sorted(int(g) for g in rng.choice(len(GENRES), size=count, replace=False, p=weights / weights.sum()))


def _write_movie(dataset: Path, movie: str, rng: np.random.Generator) -> None:
    import cv2

    ranks = _genres(rng)
    genres = [GENRES[g] for g in ranks]
    if rng.random() < 0.06:
        genres.append(str(rng.choice(RARE)))
    ok, jpeg = cv2.imencode(".jpg", _poster(rng, [g // 2 for g in ranks if g % 2 == 0])[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("cv2 failed to encode a JPEG")
    (dataset / f"{movie}.jpeg").write_bytes(jpeg.tobytes())
    cues = [g // 2 for g in ranks if g % 2 == 1]
    title = " ".join(str(w) for w in rng.choice(FILLER, size=2)).title()
    year = int(rng.integers(1930, 2015))
    record = {
        "title": title, "year": year, "kind": "movie", "genres": genres, "plot": _plots(rng, cues),
        "votes": int(rng.integers(5, 90000)), "rating": round(float(rng.uniform(2, 9)), 1),
        "cover url": f"https://images.example/{movie}.jpg", "smart canonical title": title,
        "long imdb title": f"{title} ({year})", "long imdb canonical title": f"{title} ({year})",
        "smart long imdb canonical title": f"{title} ({year})", "certificates": ["USA:PG"],
        "country codes": ["us"], "languages": ["English"], "runtimes": [str(int(rng.integers(70, 150)))],
    }
    (dataset / f"{movie}.json").write_text(json.dumps(record), encoding="utf-8")


def _plots(rng: np.random.Generator, cues: list[int]) -> list[str]:
    """1-3 plot texts, each with two keywords per cued genre among filler words."""
    plots = []
    for _ in range(int(rng.integers(1, 4))):
        words = [str(w) for g in cues for w in rng.choice(KEYWORDS[g], size=2, replace=False)]
        if rng.random() < 0.2:
            words.append(str(rng.choice(KEYWORDS[int(rng.integers(len(KEYWORDS)))])))
        words += [str(w) for w in rng.choice(FILLER, size=int(rng.integers(6, 30)))]
        plots.append(" ".join(rng.permutation(words)).capitalize() + ".")
    return plots


def _poster(rng: np.random.Generator, glyphs: list[int]) -> np.ndarray:
    """An RGB uint8 poster [h, w, 3]: a noisy gradient with each glyph (colour x shape id) in its own cell."""
    import cv2

    width = int(rng.integers(54, 81))
    height = int(width * 1.48)
    top, bottom = rng.integers(30, 140, size=3), rng.integers(30, 140, size=3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    canvas = top + (bottom - top) * ramp + rng.normal(0, 10, size=(height, width, 3))
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    cells = rng.permutation(6)[:len(glyphs)]
    r = width // 5
    for glyph, cell in zip(glyphs, cells):
        cy = int((cell // 2 + 0.5) * height / 3 + rng.integers(-3, 4))
        cx = int((cell % 2 + 0.5) * width / 2 + rng.integers(-3, 4))
        colour, shape = COLOURS[glyph % 4], SHAPES[glyph // 4]
        if shape == "circle":
            cv2.circle(canvas, (cx, cy), r, colour, -1)
        elif shape == "square":
            cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
        else:
            cv2.fillPoly(canvas, [np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)], colour)
    return canvas
