"""Synthetic mini Hateful Memes in the release layout, with benign confounders so no single modality works.

Layout written under ``out`` (corpora.md section 2)::

    img/<5-digit id>.png      RGB PNG memes of varying size (ids below 10000 exercise the zero padding)
    train.jsonl dev_seen.jsonl dev_unseen.jsonl test_seen.jsonl     {"id", "img", "label", "text"} lines
    test_unseen.jsonl                                               {"id", "img", "text"}: no labels
    (phase=1: train.jsonl, dev.jsonl and an unlabeled test.jsonl instead)

Signal: a meme's picture shows one of four shapes (its image class ``i``) and its caption talks about one of
four topics (its caption class ``c``); it is hateful iff ``i + c`` is odd. Memes come in triplets, as the
dataset's benign confounders do: a base meme, the same picture (identical pixels, another file) with a
caption of another topic that flips the label, and the same caption on another picture that flips it too.
The confounders share the picture's pixels or the caption's exact words. Every image class and every
caption topic is hateful half the time, so either modality alone is at chance
(AUROC ~0.5) and only their combination tells the label. Pictures carry no rendered caption, so an image
model cannot read the text off the pixels.

All draws come from ``make_rng(seed, "hateful_memes", ...)``; the same arguments write byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

SHAPES = ("circle", "square", "triangle", "cross")
#: Each image class's shape is drawn in its own hue (jittered), so a small CNN finds the class quickly.
HUES = ((230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40))
TOPICS = (("rain", "cloud", "storm", "umbrella", "thunder", "flood"),
          ("pizza", "bread", "cheese", "soup", "noodles", "cake"),
          ("guitar", "drums", "song", "concert", "piano", "choir"),
          ("football", "tennis", "goal", "stadium", "runner", "match"))
FILLER = ("look", "at", "this", "when", "you", "the", "my", "friends", "every", "day", "again", "really",
          "why", "is", "so", "me", "and", "they", "said", "like")
TEMPLATES = ("{f0} {t0} {f1} {t1}", "{t0} {f0} {f1} {t1} {f2}", "{f0} {f1} {t0} and {t1}",
             "{t0} {f0} {t1} {f1} {f2} {f3}")


def generate(out: Path, *, seed: int = 0, phase: int = 2, train: int = 450, valid: int = 120, test: int = 240,
             unseen: int = 120) -> Path:
    """Write a synthetic Hateful Memes release under ``out``.

    Args:
        out: the folder to create (the unpacked zip's ``data/`` folder).
        seed: base seed.
        phase: 2 (train, dev_seen, dev_unseen, test_seen, test_unseen) or 1 (train, dev, test).
        train, valid, test: labeled memes in train.jsonl, dev_seen.jsonl and test_seen.jsonl, which the reader
            reads as its train, valid and test splits ("dev" is the release's name of a validation split,
            ``valid`` everywhere in mmdata). With phase 1, ``valid`` sizes dev.jsonl (the reader's test there; its
            valid is the tail of train.jsonl) and ``test`` the unlabeled test.jsonl.
        unseen: memes in dev_unseen.jsonl and in the unlabeled test_unseen.jsonl (phase 2 only).

    Returns:
        ``out``, the root for :mod:`mmdata.corpora.hateful_memes`.

    Raises:
        ValueError: an unknown phase or a size below 3 (one confounder triplet).
    """
    if phase not in (1, 2) or min(train, valid, test, unseen) < 3:
        raise ConfigError(f"phase must be 1 or 2 and every size >= 3, got phase {phase}, sizes "
                         f"{train}, {valid}, {test}, {unseen}")
    files = {"train": (train, True), "dev_seen": (valid, True), "dev_unseen": (unseen, True),
             "test_seen": (test, True), "test_unseen": (unseen, False)}
    if phase == 1:
        files = {"train": (train, True), "dev": (valid, True), "test": (test, False)}
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    ids = make_rng(seed, "hateful_memes", "ids").choice(np.arange(1, 100000), sum(n for n, _ in files.values()),
                                                       replace=False)
    start = 0
    for stem, (n, labeled) in files.items():
        rng = make_rng(seed, "hateful_memes", stem)
        lines = [_write_meme(out, int(meme), meme_spec, labeled)
                 for meme, meme_spec in zip(ids[start:start + n], _specs(rng, n))]
        (out / f"{stem}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        start += n
    return out


def _specs(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]]:
    """(image class, caption class, picture seed, caption seed) of n memes, in confounder triplets, shuffled.

    The seeds fix the pixels and the words: a text confounder re-uses its base meme's picture seed (the same
    picture), an image confounder its caption seed (the same caption), as the dataset's confounders do.
    """
    specs = []
    while len(specs) < n:
        image, caption = (int(v) for v in rng.integers(0, 4, size=2))
        picture, words, other_picture, other_words = (int(v) for v in rng.integers(0, 2**31, size=4))
        other_caption = (caption + 1 + 2 * int(rng.integers(0, 2))) % 4  # odd shift: the parity flips
        other_image = (image + 1 + 2 * int(rng.integers(0, 2))) % 4
        specs += [(image, caption, picture, words), (image, other_caption, picture, other_words),
                  (other_image, caption, other_picture, words)]
    order = rng.permutation(n)
    return [specs[i] for i in order]


def _write_meme(out: Path, meme: int, spec: tuple[int, int, int, int], labeled: bool) -> dict:
    """Write one meme's PNG and return its JSONL record (keys in the release's order)."""
    import cv2

    image_class, caption_class, picture, words = spec
    name = f"img/{meme:05d}.png"
    ok, png = cv2.imencode(".png", _picture(image_class, picture)[:, :, ::-1])
    if not ok:
        raise RuntimeError("cv2 failed to encode a PNG")
    (out / name).write_bytes(png.tobytes())
    record: dict = {"id": meme, "img": name}
    if labeled:
        record["label"] = (image_class + caption_class) % 2
    record["text"] = _caption(caption_class, words)
    return record


def _picture(image_class: int, picture: int) -> np.ndarray:
    """An RGB uint8 picture [h, w, 3] of the class's shape; all other draws come from the picture seed."""
    import cv2

    rng = make_rng(picture, "hateful_memes", "picture")
    height, width = int(rng.integers(72, 120)), int(rng.integers(72, 120))
    base = rng.integers(60, 196, size=3)
    canvas = np.clip(base + rng.normal(0, 6, size=(height, width, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(v) for v in np.clip(np.array(HUES[image_class]) + rng.integers(-30, 31, size=3), 0, 255))
    r = int(min(height, width) * rng.uniform(0.22, 0.32))
    cy, cx = int(rng.integers(r + 2, height - r - 2)), int(rng.integers(r + 2, width - r - 2))
    shape = SHAPES[image_class]
    if shape == "circle":
        cv2.circle(canvas, (cx, cy), r, colour, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif shape == "triangle":
        points = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(canvas, [points], colour)
    else:
        cv2.rectangle(canvas, (cx - r, cy - r // 3), (cx + r, cy + r // 3), colour, -1)
        cv2.rectangle(canvas, (cx - r // 3, cy - r), (cx + r // 3, cy + r), colour, -1)
    return canvas


def _caption(topic: int, words: int) -> str:
    """A caption with two words of the topic among filler words, from one of a few templates (seeded)."""
    rng = make_rng(words, "hateful_memes", "caption")
    cue = rng.choice(TOPICS[topic], size=2, replace=False)
    filler = rng.choice(FILLER, size=4, replace=False)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(t0=cue[0], t1=cue[1], **{f"f{i}": w for i, w in enumerate(filler)})
