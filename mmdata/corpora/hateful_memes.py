"""Hateful Memes (Kiela et al. 2020): meme image + overlaid caption -> hateful or not.

Provenance (corpora.md section 2): the licensed zip unpacks to ``img/<5-digit id>.png`` and JSONL files whose
lines hold ``id`` (an int: the file name's leading zeros are lost), ``img`` ("img/01235.png"), ``text`` and,
where released, ``label`` (0 or 1). Phase 1 shipped ``train``/``dev``/``test.jsonl``; Phase 2 ships
``train``, ``dev_seen``, ``dev_unseen``, ``test_seen`` and ``test_unseen.jsonl``. The root may be that folder
or its parent ``data/``-style folder.

Splits (option ``phase``: "auto" finds which names are present):

- Phase 2: train <- train.jsonl; valid <- dev_seen.jsonl; test <- test_seen.jsonl (the "seen" protocol of
  the paper; copies carry its labels); unlabeled <- test_unseen.jsonl (no labels: the Phase-2 competition
  test). dev_unseen.jsonl (540 memes, mostly re-used from dev_seen) is not read.
- Phase 1: train <- train.jsonl but its last n // 17 lines (500 of 8,500, the size of dev), valid <- those
  last lines, test <- dev.jsonl (the labeled held-out set Phase-1 results report), unlabeled <- test.jsonl.

Unlabeled memes are kept, not skipped: lines of a test file without a ``label`` go to the "unlabeled" split
with label ``-1`` (:data:`mmdata.types.UNLABELED`, the Field's declared ``unlabeled`` value, excluded from
class counts), so predictions can be written for the competition test. The pipeline trains on train,
selects on valid and reports AUROC and accuracy on test, never on unlabeled.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.corpora.base import REPAIRS, SOURCE, Corpus, RawCount, Skip, inside_root, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import ConfigError, SampleError
from mmdata.modalities import image as image_io
from mmdata.modalities import text as text_io
from mmdata.types import UNLABELED, Features, Field, Sample, make_key

NAME = "hateful_memes"
SPLITS = ("train", "valid", "test", "unlabeled")
CLASSES = ("not_hateful", "hateful")
#: JSONL names of each release phase.
PHASE_FILES = {2: ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen"), 1: ("train", "dev", "test")}
#: split -> (file stem, which lines) per phase; "head"/"tail" cut train.jsonl, "labeled"/"unlabeled" route
#: the lines of a test file by whether they carry a label.
PLANS = {
    2: {"train": [("train", "all")], "valid": [("dev_seen", "all")], "test": [("test_seen", "labeled")],
        "unlabeled": [("test_unseen", "all"), ("test_seen", "unlabeled")]},
    1: {"train": [("train", "head")], "valid": [("train", "tail")], "test": [("dev", "labeled")],
        "unlabeled": [("test", "all"), ("dev", "unlabeled")]},
}
#: Phase 1 validation = the last n // 17 train lines (500 of 8,500).
VALID_DIVISOR = 17
DEFAULT_IMAGE_SIZE = 64


def _base_and_phase(root: str | Path, phase: str | int) -> tuple[Path, int]:
    """The folder with the JSONL files and the phase found there (or asked for)."""
    base = require_root(root, NAME)
    if str(phase) not in ("auto", "1", "2"):
        raise ConfigError(f"{NAME}: unknown phase {phase!r}; valid: auto, 1, 2")
    for folder in (base, base / "data", base / "hateful_memes"):
        for number in ((2, 1) if str(phase) == "auto" else (int(phase),)):
            if all((folder / f"{stem}.jsonl").is_file() for stem in PHASE_FILES[number] if stem != "dev_unseen"):
                return folder, number
    names = {n: ", ".join(f"{s}.jsonl" for s in stems) for n, stems in PHASE_FILES.items()}
    raise ConfigError(f"{NAME}: no Phase-{phase if phase != 'auto' else '1 or 2'} release under {base}: expected "
                      f"img/ and either {names[2]} (Phase 2) or {names[1]} (Phase 1)")


def _check(image_size: Any) -> image_io.Size | None:
    return image_io.parse_size(image_size, NAME)


def features(root: str | Path, *, phase: str | int = "auto", image_size: Any = DEFAULT_IMAGE_SIZE) -> Features:
    """The schema: meme image, caption and the binary label (-1 on unlabeled memes)."""
    size = _check(image_size)
    return {
        "image": image_io.image_field(size, "png", "meme (img/<id>.png)"),
        "text": Field("str", (), "txt", description="the caption overlaid on the meme (JSONL 'text')"),
        "label": Field("int64", (), "cls", classes=CLASSES, unlabeled=UNLABELED,
                       description="1 = hateful; -1 on the 'unlabeled' split (a test file without labels)"),
    }


def _files(base: Path, number: int) -> list[Path]:
    return [base / f"{stem}.jsonl" for stem in PHASE_FILES[number] if (base / f"{stem}.jsonl").is_file()]


def sources(root: str | Path, *, phase: str | int = "auto", image_size: Any = DEFAULT_IMAGE_SIZE) -> list[Path]:
    """The phase's JSONL files and every image file under img/."""
    base, number = _base_and_phase(root, phase)
    images = sorted(p for p in (base / "img").glob("*") if p.is_file()) if (base / "img").is_dir() else []
    return [*_files(base, number), *images]


def describe(root: str | Path, *, phase: str | int = "auto", image_size: Any = DEFAULT_IMAGE_SIZE) -> str:
    """Which phase's files were found and how they map to splits."""
    base, number = _base_and_phase(root, phase)
    plan = "; ".join(f"{split} <- " + " + ".join(f"{stem}.jsonl ({rows})" for stem, rows in parts)
                     for split, parts in PLANS[number].items())
    return f"Hateful Memes Phase-{number} release at {base}: {plan}; image_size: {image_size}"


def _lines(base: Path, stem: str, rows: str) -> Iterator[tuple[str, int, Any]]:
    """``(file stem, line number, object or SampleError)`` of the lines of one file that a plan entry takes."""
    lines = list(text_io.iter_jsonl(base / f"{stem}.jsonl"))
    if rows in ("head", "tail"):
        cut = len(lines) - len(lines) // VALID_DIVISOR
        lines = lines[:cut] if rows == "head" else lines[cut:]
    for number, obj in lines:
        # A line too broken to tell counts as labeled: it is reported once, in the labeled split.
        labeled = not isinstance(obj, dict) or obj.get("label") is not None
        if rows in ("all", "head", "tail") or labeled == (rows == "labeled"):
            yield stem, number, obj


def _meme_id(obj: Any) -> str:
    """The 5-digit zero-padded id (the image file's name); SampleError when absent or not an integer."""
    if not isinstance(obj, dict):
        raise SampleError("schema", f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("id") is None:
        raise SampleError("missing_key", "no 'id'")
    try:
        return f"{int(str(obj['id'])):05d}"
    except ValueError:
        raise SampleError("schema", f"id {obj['id']!r} is not an integer") from None


def _label(obj: dict, split: str) -> int:
    label = obj.get("label")
    if label is None:
        if split == "unlabeled":
            return UNLABELED
        raise SampleError("missing_key", f"no 'label' on a line of the {split} split")
    if isinstance(label, bool) or label not in (0, 1):
        raise SampleError("unknown_label", f"label {label!r} is not 0 or 1")
    return int(label)


def _image_path(base: Path, obj: dict, meme: str) -> Path:
    """The ``img`` path when it exists, else ``img/<5-digit id>.png`` (ids lose their zeros in the JSONL).

    Raises:
        FileError: ``outside_root`` when ``img`` (or the image it names) leads out of the release folder;
            refused rather than replaced by the id's file, since such a line was not written by the release.
    """
    given = obj.get("img")
    if isinstance(given, str) and given:
        path = inside_root(base, given)
        if path.is_file():
            return path
    return inside_root(base, "img", f"{meme}.png")


def _meme(base: Path, obj: dict, meme: str, split: str, size: image_io.Size | None) -> Sample:
    if obj.get("text") is None:
        raise SampleError("missing_key", "no 'text'")
    fixed: list[str] = []
    text, label = text_io.clean_text(obj["text"], "text", fixed), _label(obj, split)
    path = _image_path(base, obj, meme)
    image, repairs = image_io.load_image(image_io.read_file(path, "image"), "jpg" if size else "png", size)
    return {"__key__": make_key(NAME, split, meme), "image": image, "text": text, "label": label,
            SOURCE: str(path), REPAIRS: (*repairs, *fixed)}


def _earlier_ids(base: Path, number: int, split: str) -> dict[str, str]:
    """meme id -> earlier labeled split holding it (train before valid before test); {} for unlabeled."""
    if split == "unlabeled":
        return {}
    out = {}
    for other in SPLITS[:SPLITS.index(split)]:
        for parts in PLANS[number][other]:
            for _, _, obj in _lines(base, *parts):
                try:
                    out.setdefault(_meme_id(obj), other)
                except SampleError:
                    continue
    return out


def iter_samples(root: str | Path, split: str, *, phase: str | int = "auto",
                 image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """Memes of one split in file order, one Sample or Skip per JSONL line taken by the split.

    Args:
        root: the folder with ``img/`` and the JSONL files (or its parent).
        split: "train", "valid", "test" or "unlabeled" (see the module docstring for the files).
        phase: "auto", 1 or 2 (which file names to read).
        image_size: None keeps the PNG bytes; an int or [height, width] resizes once, stored as JPEG.

    Yields:
        ``{"__key__": "hateful_memes/<split>/<5-digit id>", "image", "text", "label"}`` or a Skip.

    Raises:
        ConfigError: unknown split or option, missing root or JSONL files.
    """
    yield from iter_part(root, split, 0, None, phase=phase, image_size=image_size)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *, phase: str | int = "auto",
              image_size: Any = DEFAULT_IMAGE_SIZE) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (None: to the end): the JSONL lines before
    ``start`` are only parsed for their ids (duplicates), and only the part's images are read."""
    if split not in SPLITS:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    size, (base, number) = _check(image_size), _base_and_phase(root, phase)
    earlier, seen = _earlier_ids(base, number, split), set()
    lines = (line for parts in PLANS[number][split] for line in _lines(base, *parts))
    for index, (stem, line, obj) in enumerate(lines):
        if stop is not None and index >= stop:
            return
        where = f"{base / stem}.jsonl:{line}"
        claim = _claim(obj, split, stem, line, where, earlier, seen)
        if index >= start:
            yield claim if isinstance(claim, Skip) else _load(base, obj, claim, split, size, where)


def _claim(obj: Any, split: str, stem: str, line: int, where: str, earlier: dict[str, str], seen: set[str]
           ) -> str | Skip:
    """The line's meme id, now claimed in ``seen``; or a Skip (bad line, duplicate id)."""
    try:
        if isinstance(obj, SampleError):
            raise obj
        meme = _meme_id(obj)
    except SampleError as err:
        return Skip(make_key(NAME, split, f"{stem}-line{line}"), where, err.reason, str(err))
    if meme in seen or meme in earlier:
        key = make_key(NAME, split, meme)
        return Skip(key, where, "duplicate_id", f"id {meme} already in the {earlier.get(meme, split)} split")
    seen.add(meme)
    return meme


def _load(base: Path, obj: Any, meme: str, split: str, size: image_io.Size | None, where: str) -> Sample | Skip:
    """The claimed line as a Sample, or a Skip naming the bad field."""
    try:
        return _meme(base, obj, meme, split, size)
    except SampleError as err:
        return Skip(make_key(NAME, split, meme), where, err.reason, str(err))


def count_raw(root: str | Path, split: str, *, phase: str | int = "auto",
              image_size: Any = DEFAULT_IMAGE_SIZE) -> RawCount:
    """JSONL lines the split takes (each one Sample or Skip); lines are parsed, no image is opened.

    Args:
        root, split, phase, image_size: as for :func:`iter_samples`.
    """
    _check(image_size)
    base, number = _base_and_phase(root, phase)
    parts = PLANS[number][check_split(NAME, split, SPLITS)]
    lines = sum(1 for part in parts for _ in _lines(base, *part))
    return raw_count(lines, "JSONL line", [base, base / "img"])


CORPUS = Corpus(name=NAME, splits=SPLITS, task="classification", features=features, iter_samples=iter_samples,
                sources=sources, describe=describe, count_raw=count_raw, iter_part=iter_part)
