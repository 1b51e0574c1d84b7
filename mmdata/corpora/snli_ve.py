"""SNLI-VE (Xie et al. 2019): does a Flickr30k image entail, contradict or leave open a hypothesis sentence?

Provenance (corpora.md section 3): ``necla-ml/SNLI-VE``'s generator writes ``snli_ve_{train,dev,test}.jsonl``,
one SNLI record per line (``sentence2`` = the hypothesis, ``gold_label``, ``pairID``, ...) plus the image id,
under ``Flikr30kID`` ("<id>.jpg", files made before April 2020 and the copies most people hold) or
``Flickr30K_ID`` ("<id>", the current generator); both are read, per line. Images come from
``flickr30k_images.tar.gz`` as ``flickr30k_images/<id>.jpg``. The root may be that folder or its ``data/`` child.

Storage (design 5b, "never duplicate bytes to express structure"): about 30k images carry 550k pairs, so one
stored sample is one image with all its hypotheses and labels, and the corpus declares a pick
:class:`~mmdata.types.View`: each pair is an index row (``key = <image key>/<pairID>``, its label, ``pick`` =
the hypothesis' position) and readers get one pair per row, the image decoded from its single stored copy.
Shard bytes thus grow with images, not pairs.

Ledger: a raw item is an image (one Sample or Skip), or a line excluded on its own (``no_gold_label`` for
SNLI's "-", ``unknown_label``, ``missing_key``, ``encoding``, ``bad_json``, ``empty_text``, ``duplicate_id``).
A skipped image's detail names how many pairs went with it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, inside_root, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import ConfigError, FileError, SampleError
from mmdata.modalities import image as image_io
from mmdata.modalities import text as text_io
from mmdata.types import ROWS, Features, Field, Sample, View, make_key

NAME = "snli_ve"
#: Our split -> file name.
FILES = {"train": "snli_ve_train.jsonl", "valid": "snli_ve_dev.jsonl", "test": "snli_ve_test.jsonl"}
CLASSES = ("entailment", "neutral", "contradiction")  # MMF's order
#: Image-id keys in the order tried: the old generator (with ".jpg"), the current one, MMF's spelling.
IMAGE_KEYS = ("Flikr30kID", "Flickr30K_ID", "Flickr30kID")
IMAGES = "flickr30k_images"
NEEDED = ("pairID", "sentence2", "gold_label")
DEFAULT_IMAGE_SIZE = 112
VIEW = View("pick", ("text_hypothesis",))
#: One usable line: (row id, hypothesis, label id, repairs of the hypothesis).
Pair = tuple[str, str, int, tuple[str, ...]]


def _base(root: str | Path) -> Path:
    base = require_root(root, NAME)
    for folder in (base, base / "data"):
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    raise ConfigError(f"{NAME}: expected {', '.join(FILES.values())} and {IMAGES}/ under {base} (or {base / 'data'});"
                      f" generate them with necla-ml/SNLI-VE (vet/tools/snli_ve_generator.py)")


def features(root: str | Path, *, image_size: Any = DEFAULT_IMAGE_SIZE) -> Features:
    """The stored schema: one image with its hypotheses and their labels (viewed as one pair per row)."""
    size = image_io.parse_size(image_size, NAME)
    return {
        "image": image_io.image_field(size, "jpg", f"Flickr30k photo ({IMAGES}/<id>.jpg)"),
        "text_hypothesis": Field("str", (None,), "json",
                                 description="the image's hypotheses (SNLI sentence2), one per pair"),
        "label": Field("int64", (None,), "json", classes=CLASSES, description="gold_label of each pair"),
    }


def sources(root: str | Path, *, image_size: Any = DEFAULT_IMAGE_SIZE) -> list[Path]:
    """The three JSONL files and every image file in flickr30k_images/."""
    base = _base(root)
    images = sorted(p for p in (base / IMAGES).glob("*.jpg")) if (base / IMAGES).is_dir() else []
    return [*(base / name for name in FILES.values()), *images]


def describe(root: str | Path, *, image_size: Any = DEFAULT_IMAGE_SIZE) -> str:
    """The layout and the image-id key of each file's first line."""
    base = _base(root)
    keys = []
    for name in FILES.values():
        first = next((obj for _, obj in text_io.iter_jsonl(base / name) if isinstance(obj, dict)), {})
        keys.append(f"{name}: {next((k for k in IMAGE_KEYS if k in first), 'no image key')}")
    return f"SNLI-VE at {base} ({'; '.join(keys)}); images {base / IMAGES}; image_size: {image_size}"


def _image_id(obj: dict) -> str:
    for name in IMAGE_KEYS:
        value = obj.get(name)
        if isinstance(value, (str, int)) and str(value).strip():
            value = str(value).strip()
            return value[:-4] if value.lower().endswith(".jpg") else value
    raise SampleError("missing_key", f"no image id ({' or '.join(IMAGE_KEYS)})")


def _pair(obj: Any, repairs: list[str]) -> tuple[str, str, str, int]:
    """(image id, pairID, hypothesis, label id) of one parsed line, the hypothesis's repairs appended to
    ``repairs``; SampleError names what is wrong."""
    if isinstance(obj, SampleError):
        raise obj
    if not isinstance(obj, dict):
        raise SampleError("schema", f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in NEEDED if obj.get(k) is None]
    if missing:
        raise SampleError("missing_key", f"no {missing}")
    image = _image_id(obj)
    if obj["gold_label"] == "-":
        raise SampleError("no_gold_label", "gold_label '-' (no annotator majority): excluded, as SNLI-VE does")
    if obj["gold_label"] not in CLASSES:
        raise SampleError("unknown_label", f"gold_label {obj['gold_label']!r} not in {CLASSES}")
    text = text_io.clean_text(obj["sentence2"], "sentence2", repairs)
    return image, str(obj["pairID"]), text, CLASSES.index(obj["gold_label"])


def _safe(part: str) -> str:
    """A source id as a key part (the same replacement as :func:`mmdata.types.make_key`)."""
    return make_key(NAME, "x", part).split("/", 2)[2]


def _group(path: Path, split: str) -> tuple[dict[str, list[Pair]], list[Skip]]:
    """Good lines grouped by image id, as (row id, hypothesis, label) in file order, and the line skips."""
    groups: dict[str, list[Pair]] = {}
    skips, seen = [], set()
    for number, obj in text_io.iter_jsonl(path):
        where = f"{path}:{number}"
        try:
            fixed: list[str] = []
            image, pair, text, label = _pair(obj, fixed)
            row = _safe(pair)
        except (SampleError, ValueError) as err:
            reason = getattr(err, "reason", "bad_key")
            skips.append(Skip(make_key(NAME, split, f"line{number}"), where, reason, str(err)))
            continue
        key = f"{_key(split, image)}/{row}"
        if row in seen:
            skips.append(Skip(key, where, "duplicate_id", f"pairID {pair} already read (as row id {row})"))
            continue
        seen.add(row)
        groups.setdefault(image, []).append((row, text, label, tuple(fixed)))
    return groups, skips


def _key(split: str, image: str) -> str:
    try:
        return make_key(NAME, split, image)
    except ValueError:
        return make_key(NAME, split, "invalid-image-id")


def _image_sample(base: Path, split: str, image: str, pairs: list[Pair],
                  size: image_io.Size | None) -> Sample | Skip:
    key = _key(split, image)
    try:
        # The image id is a JSONL string: it may not name a file outside the release (nor a symlink leading out).
        path = inside_root(base, IMAGES, f"{image}.jpg")
    except FileError as err:
        return Skip(key, str(err.path), err.reason, f"{err} ({len(pairs)} pairs)")
    try:
        value, repairs = image_io.load_image(image_io.read_file(path, "image"), "jpg", size)
    except SampleError as err:
        return Skip(key, str(path), err.reason, f"{err} ({len(pairs)} pairs)")
    return {"__key__": key, "image": value, "text_hypothesis": [t for _, t, _, _ in pairs],
            "label": [y for _, _, y, _ in pairs], SOURCE: str(path),
            REPAIRS: (*repairs, *(fix for *_, fixes in pairs for fix in fixes)),
            ROWS: [{"id": row, "label": y, "pick": j} for j, (row, _, y, _) in enumerate(pairs)]}


def iter_samples(root: str | Path, split: str, *, image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """The excluded lines of one split (file order), then one Sample or Skip per image (sorted by id).

    Args:
        root: the folder holding the three JSONL files and ``flickr30k_images/`` (or its parent).
        split: "train", "valid" (snli_ve_dev.jsonl) or "test".
        image_size: None keeps the JPEG bytes; an int or [height, width] resizes once (:mod:`mmdata.modalities.image`).

    Yields:
        Skips, then ``{"__key__": "snli_ve/<split>/<image id>", "image", "text_hypothesis" [pairs],
        "label" [pairs], "__rows__"}`` samples (or image Skips).

    Raises:
        ConfigError: unknown split or option, missing root or files.
    """
    yield from iter_part(root, split, 0, None, image_size=image_size)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *,
              image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end): the split's JSONL is parsed
    whole (an image's pairs may lie anywhere in it), and only the part's images are read."""
    if split not in FILES:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(FILES)}")
    size, base = image_io.parse_size(image_size, NAME), _base(root)
    groups, skips = _group(base / FILES[split], split)
    yield from skips[start:stop]
    images = sorted(groups)[max(0, start - len(skips)):None if stop is None else max(0, stop - len(skips))]
    for image in images:
        yield _image_sample(base, split, image, groups[image], size)


def count_raw(root: str | Path, split: str, *, image_size: Any = DEFAULT_IMAGE_SIZE) -> RawCount:
    """Images plus lines excluded on their own (the module's ledger unit); lines parsed, no image opened.

    Args:
        root, split, image_size: as for :func:`iter_samples`.
    """
    image_io.parse_size(image_size, NAME)
    base = _base(root)
    groups, skips = _group(base / FILES[check_split(NAME, split, tuple(FILES))], split)
    return raw_count(len(groups) + len(skips), "image or excluded line", [base, base / IMAGES])


CORPUS = Corpus(name=NAME, splits=tuple(FILES), task="classification", features=features,
                iter_samples=iter_samples, sources=sources, describe=describe, view=VIEW, count_raw=count_raw,
                iter_part=iter_part)
