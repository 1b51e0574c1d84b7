"""Synthetic mini SNLI-VE in the generator's layout, with labels that need the image and the hypothesis.

Layout written under ``out`` (corpora.md section 3)::

    snli_ve_train.jsonl snli_ve_dev.jsonl snli_ve_test.jsonl   one SNLI record per line, keys sorted, plus
                                                              the image id under ``key_style``
    flickr30k_images/<flickr id>.jpg                         one JPEG per image, shared by its pairs

``key_style`` "Flikr30kID" writes ``"Flikr30kID": "<id>.jpg"`` (the widely copied pre-2020 files);
"Flickr30K_ID" writes ``"Flickr30K_ID": "<id>"`` (the current generator). Each image has ``captions``
premises (``sentence1``, ``captionID`` "<id>.jpg#<n>") and, per premise, one entailment, one neutral and one
contradiction hypothesis (``pairID`` "<id>.jpg#<n>r1e|n|c"), as SNLI collected them. A share ``no_gold`` of
images get one more line whose annotators disagree (``gold_label`` "-"), which the reader must exclude.

Signal: a picture shows one shape in one colour; a hypothesis names a colour and a shape. Entailment: both
right; contradiction: the colour wrong; neutral: the colour right and the shape wrong (a synthetic rule, not
SNLI semantics). Each image carries every label equally often and every hypothesis wording is equally likely
under each label, so image alone and hypothesis alone are at chance (1/3); only comparing them works.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdata.errors import ConfigError
from mmdata.rng import make_rng

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230)}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = ("a {c} {s} is in the picture", "there is one {c} {s}", "the photo shows a {c} {s}",
             "someone drew a {c} {s}", "a {s} , {c} , appears here")
KEY_STYLES = ("Flikr30kID", "Flickr30K_ID")
FILES = {"train": "snli_ve_train.jsonl", "dev": "snli_ve_dev.jsonl", "test": "snli_ve_test.jsonl"}
LETTERS = {"entailment": "e", "neutral": "n", "contradiction": "c"}


def generate(out: Path, *, seed: int = 0, train: int = 180, valid: int = 40, test: int = 80, captions: int = 2,
             size: int = 112, key_style: str = "Flikr30kID", no_gold: float = 0.02) -> Path:
    """Write a synthetic SNLI-VE under ``out``.

    Args:
        out: the folder to create (holding the JSONL files and ``flickr30k_images/``).
        seed: base seed; the same arguments write byte-identical files.
        train, valid, test: images per split (each with ``3 * captions`` pairs); valid is written as the
            release's ``snli_ve_dev.jsonl``.
        captions: premises per image.
        size: side of the square JPEG images, in pixels (112 with the noisy texture keeps the JPEG well above
            the ~2.9 KB of tar headers and labels per stored sample, as real photos are).
        key_style: "Flikr30kID" (with ".jpg") or "Flickr30K_ID" (bare id).
        no_gold: share of images with one extra ``gold_label`` "-" line (rounded to a count per split).

    Returns:
        ``out``, the root for :mod:`mmdata.corpora.snli_ve`.

    Raises:
        ValueError: an unknown key style, or a split without images.
    """
    if key_style not in KEY_STYLES or min(train, valid, test, captions) < 1:
        raise ConfigError(f"key_style must be one of {KEY_STYLES} and sizes >= 1, got {key_style!r}, "
                         f"{train}, {valid}, {test}, {captions}")
    out = Path(out)
    (out / "flickr30k_images").mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "dev": valid, "test": test}
    ids = make_rng(seed, "snli_ve", "ids").choice(np.arange(10**9, 5 * 10**9, 7919), sum(counts.values()),
                                                  replace=False)
    start = 0
    for split, n in counts.items():
        rng = make_rng(seed, "snli_ve", split)
        # Exactly round(no_gold * n) images get a "-" line, so a small split never gets more than its share.
        dashes = set(rng.permutation(n)[:int(no_gold * n + 0.5)].tolist())
        lines = []
        for i, image in enumerate(ids[start:start + n]):
            lines += _image(out, str(image), rng, captions, size, key_style, i in dashes)
        (out / FILES[split]).write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines),
                                        encoding="utf-8")
        start += n
    return out


def _image(out: Path, image: str, rng: np.random.Generator, captions: int, size: int, key_style: str,
           dash: bool) -> list[dict]:
    """Write one image's JPEG and return its SNLI records."""
    import cv2

    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    ok, jpeg = cv2.imencode(".jpg", _picture(rng, colour, shape, size)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("cv2 failed to encode a JPEG")
    (out / "flickr30k_images" / f"{image}.jpg").write_bytes(jpeg.tobytes())
    ref = {"Flikr30kID": f"{image}.jpg"} if key_style == "Flikr30kID" else {"Flickr30K_ID": image}
    lines = []
    for n in range(captions):
        premise = f"a {colour} {shape} drawn on a noisy background"
        for label in LETTERS:
            lines.append(_record(image, n, premise, _hypothesis(rng, colour, shape, label), label, ref))
    if dash:
        line = _record(image, 0, premise, _hypothesis(rng, colour, shape, "neutral"), "-", ref)
        line["pairID"], line["annotator_labels"] = f"{image}.jpg#0r2n", ["neutral", "entailment", "contradiction"]
        lines.append(line)
    return lines


def _hypothesis(rng: np.random.Generator, colour: str, shape: str, label: str) -> str:
    """A hypothesis naming a colour and a shape that relate to the picture as ``label`` says."""
    if label == "contradiction":
        colour = str(rng.choice([c for c in COLOURS if c != colour]))
        shape = str(rng.choice(SHAPES))
    elif label == "neutral":
        shape = str(rng.choice([s for s in SHAPES if s != shape]))
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(c=colour, s=shape)


def _record(image: str, n: int, premise: str, hypothesis: str, label: str, ref: dict) -> dict:
    """An SNLI record with every key of the released files (parses are flat, not real parser output)."""
    p1, p2 = _parses(premise), _parses(hypothesis)
    votes = [label] * 5 if label != "-" else ["neutral", "entailment", "contradiction"]
    return {**ref, "annotator_labels": votes, "captionID": f"{image}.jpg#{n}", "gold_label": label,
            "pairID": f"{image}.jpg#{n}r1{LETTERS.get(label, 'x')}", "sentence1": premise,
            "sentence1_binary_parse": p1["binary_parse"], "sentence1_parse": p1["parse"],
            "sentence2": hypothesis, "sentence2_binary_parse": p2["binary_parse"], "sentence2_parse": p2["parse"]}


def _parses(text: str) -> dict[str, str]:
    """Flat bracketings in the shape of SNLI's binary and full parses (the reader never uses them)."""
    words = text.split()
    return {"binary_parse": "( " + " ".join(words) + " )",
            "parse": "(ROOT (S " + " ".join(f"(NN {w})" for w in words) + "))"}


def _picture(rng: np.random.Generator, colour: str, shape: str, size: int) -> np.ndarray:
    """An RGB uint8 picture [size, size, 3]: textured background, one shape in the colour, slightly jittered."""
    import cv2

    base = rng.integers(70, 190, size=3)
    canvas = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
    tint = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in COLOURS[colour])
    r = int(size * rng.uniform(0.16, 0.28))
    cy, cx = (int(v) for v in rng.integers(r + 2, size - r - 2, size=2))
    if shape == "circle":
        cv2.circle(canvas, (cx, cy), r, tint, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), tint, -1)
    else:
        cv2.fillPoly(canvas, [np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)], tint)
    return canvas
