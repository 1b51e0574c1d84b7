"""AV-MNIST reader for the MultiBench layout: MNIST digits paired with spoken-digit spectrograms.

Provenance (see corpora.md section 5):

- Layout and splits follow MultiBench's loader, ``pliang279/MultiBench:datasets/avmnist/get_data.py``: six .npy
  files under the untarred ``avmnist/`` folder of ``avmnist.tar.gz`` (Google Drive link in MultiBench's README).
- The files were made by the MFAS re-implementation ``slyviacassell/_MFAS:datasets/avmnist_gen.py``: images are
  PCA-reconstructed MNIST (leading components up to 25% explained variance, flattened float), audio are 112x112
  matplotlib ``specgram`` images (uint8 channel 0) of Free Spoken Digit recordings of the same digit.

Canonical sample: ``image`` (the pixels / 255, [28, 28] float32, exactly MultiBench's ``normalize_image``),
``audio_spec`` (the spectrogram's raw levels 0..255, [112, 112]; divide by 255 at train time as MultiBench does)
and ``label`` (the digit). Each source row yields exactly one sample or one :class:`~mmdata.corpora.base.Skip`.

Codec of ``audio_spec`` (a choice, never a reason to refuse a row): integer spectrogram arrays (the archive's
uint8 images) are stored as uint8; float arrays as float32, values as released, since MultiBench divides
whatever it finds by 255 and trains on it (levels that are not whole numbers, e.g. from an interpolated or
rescaled image, load fine there). Only what would be wrong data is refused: non-finite values (``non_finite``)
and levels outside 0..255, the scale of a spectrogram image (``value_range``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mmdata.corpora.base import Corpus, RawCount, Skip, require_root
from mmdata.corpora.ledger import check_split, raw_count
from mmdata.errors import BadInputError, ConfigError, SampleError
from mmdata.types import Features, Field, Sample, make_key

NAME = "avmnist"
LOADER = "pliang279/MultiBench:datasets/avmnist/get_data.py"
GENERATOR = "slyviacassell/_MFAS:datasets/avmnist_gen.py"
#: Source file of each field, relative to the root, with ``{split}`` = "train" or "test".
FILES = {
    "image": "image/{split}_data.npy",
    "audio_spec": "audio/{split}_data.npy",
    "label": "{split}_labels.npy",
}
#: Canonical split -> the source arrays it reads.
SOURCE_SPLIT = {"train": "train", "valid": "train", "test": "test"}
#: MultiBench keeps the last 5,000 of its 60,000 training rows for validation; n // 12 is that share.
VALID_DIVISOR = 12
IMAGE_SIZE, SPEC_SIZE = 28, 112

FEATURES: Features = {
    "image": Field(
        dtype="float32", shape=(IMAGE_SIZE, IMAGE_SIZE), codec="npy",
        description="PCA-reconstructed MNIST digit (image/<split>_data.npy row) divided by 255 as MultiBench's "
                    "normalize_image does; reconstruction may leave values slightly outside 0..1"),
    "audio_spec": Field(
        dtype="uint8", shape=(SPEC_SIZE, SPEC_SIZE), codec="npy", value_range=(0, 255),
        description="spectrogram image of a spoken digit (audio/<split>_data.npy row), [frequency, time], "
                    "row 0 = highest frequency; raw 0..255 (MultiBench divides by 255)"),
    "label": Field(
        dtype="int64", shape=(), codec="cls", classes=tuple(str(d) for d in range(10)),
        description="digit 0-9 (<split>_labels.npy)"),
}
#: ``audio_spec`` of a release whose spectrogram arrays hold floats (see the module docstring).
SPEC_FLOAT = Field(
    dtype="float32", shape=(SPEC_SIZE, SPEC_SIZE), codec="npy", value_range=(0.0, 255.0),
    description="spectrogram image of a spoken digit (audio/<split>_data.npy row, float levels kept as float32), "
                "[frequency, time], row 0 = highest frequency; raw 0..255 (MultiBench divides by 255)")


def features(root: str | Path, **options: object) -> Features:
    """The schema: ``audio_spec`` is uint8 for integer spectrogram arrays, float32 when a split's array holds floats.

    Raises:
        ConfigError: the root or a spectrogram file is missing.
    """
    return {**FEATURES, "audio_spec": SPEC_FLOAT} if _float_spectrograms(root) else FEATURES


def _float_spectrograms(root: str | Path) -> bool:
    """Whether the train or test spectrogram array holds floats (read from the .npy headers only)."""
    return any(_load_npy(_paths(root, split)["audio_spec"], mmap=True).dtype.kind == "f" for split in ("train", "test"))


def sources(root: str | Path, **options: object) -> list[Path]:
    """The six source .npy files (train then test, in :data:`FILES` order).

    Raises:
        ConfigError: the root or one of the files is missing.
    """
    return [path for split in ("train", "test") for path in _paths(root, split).values()]


def describe(root: str | Path, **options: object) -> str:
    """Which layout was found and its row counts, e.g. ``AV-MNIST, MultiBench layout: train 600 rows, ...``."""
    rows = {split: len(_load(root, split, mmap=True)[0]["label"]) for split in ("train", "test")}
    valid = rows["train"] // VALID_DIVISOR
    stored = "float32 (float arrays)" if _float_spectrograms(root) else "uint8"
    return (f"AV-MNIST, MultiBench layout: train {rows['train']} rows (train {rows['train'] - valid} + valid "
            f"{valid}), test {rows['test']} rows; spectrograms stored as {stored}")


def iter_samples(root: str | Path, split: str, *, mmap: bool = True) -> Iterator[Sample | Skip]:
    """Samples of one split in source row order.

    Args:
        root: the ``avmnist`` folder holding ``image/``, ``audio/`` and the label files.
        split: "train" (first rows of the train arrays), "valid" (their last ``n // 12`` rows) or "test".
        mmap: memory-map the arrays (``np.load(mmap_mode="r")``) instead of reading them whole.

    Yields:
        A sample ``{"__key__", "image" [28, 28] float32, "audio_spec" [112, 112] uint8 (float32 for float
        spectrogram arrays, see :func:`features`), "label" int64}`` keyed ``avmnist/<split>/<source split>
        <row:05d>``, or a Skip naming the bad file and row.

    Raises:
        ConfigError: unknown split, missing root or file.
        ValueError: the three arrays disagree on rows, or an array has the wrong shape or dtype kind.
    """
    return iter_part(root, split, 0, None, mmap=mmap)


def iter_part(root: str | Path, split: str, start: int, stop: int | None, *, mmap: bool = True
              ) -> Iterator[Sample | Skip]:
    """Raw items ``start .. stop - 1`` of :func:`iter_samples` (``stop`` None: to the end); only their rows
    are read (memory-mapped arrays)."""
    if split not in SOURCE_SPLIT:
        raise ConfigError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SOURCE_SPLIT)}")
    source_split = SOURCE_SPLIT[split]
    arrays, paths = _load(root, source_split, mmap=mmap)
    spec_dtype = np.dtype(features(root)["audio_spec"].dtype)
    converters = {"image": _image, "audio_spec": functools.partial(_audio, dtype=spec_dtype), "label": _label}
    for row in _split_rows(len(arrays["label"]), split)[start:stop]:
        key = make_key(NAME, split, f"{source_split}{row:05d}")
        yield _sample(arrays, paths, row, key, converters)


def _split_rows(n: int, split: str) -> range:
    """Source rows of ``split``: valid is the tail ``n // 12`` of the train arrays (5,000 of 60,000)."""
    if split == "test":
        return range(n)
    first_valid = n - n // VALID_DIVISOR
    return range(first_valid) if split == "train" else range(first_valid, n)


def _paths(root: str | Path, source_split: str) -> dict[str, Path]:
    """Field -> source file of ``source_split``, or ConfigError naming the first missing file."""
    base = require_root(root, NAME)
    paths = {name: base / pattern.format(split=source_split) for name, pattern in FILES.items()}
    for path in paths.values():
        if not path.is_file():
            hint = ""
            if (base / "avmnist" / "image").is_dir():
                # The archive untars to an ``avmnist/`` folder; pointing at its parent is the usual slip.
                hint = f"; root looks like the archive's parent, use {base / 'avmnist'}"
            raise ConfigError(
                f"{NAME}: missing {path} (expected MultiBench's layout image/, audio/, train_labels.npy, "
                f"test_labels.npy under the root){hint}")
    return paths


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """One whole-split array; a truncated or damaged file is a BadInputError naming it (not a numpy traceback)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadInputError(f"{NAME}: {path} is not a readable .npy array ({exc}); the file is truncated or "
                            f"damaged: download or extract it again") from exc


def _load(root: str | Path, source_split: str, *, mmap: bool) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    """The three arrays of ``source_split`` (memory-mapped when ``mmap``), checked to agree, and their paths."""
    paths = _paths(root, source_split)
    arrays = {name: _load_npy(path, mmap) for name, path in paths.items()}
    rows = {name: array.shape[0] if array.ndim else 0 for name, array in arrays.items()}
    if len(set(rows.values())) != 1:
        counts = ", ".join(f"{paths[name]}: {n} rows" for name, n in rows.items())
        raise BadInputError(f"{NAME}: {source_split} arrays disagree on their row count ({counts}); "
                         f"a file is truncated or from another release")
    sizes = {"image": IMAGE_SIZE ** 2, "audio_spec": SPEC_SIZE ** 2, "label": 1}
    for name, array in arrays.items():
        if array.ndim == 0 or array.dtype.kind not in "buif" or int(np.prod(array.shape[1:])) != sizes[name]:
            raise BadInputError(f"{NAME}: {paths[name]} holds {array.dtype} {array.shape}; expected numbers "
                             f"with {sizes[name]} values per row")
    return arrays, paths


def _sample(arrays: dict[str, np.ndarray], paths: dict[str, Path], row: int, key: str,
            converters: dict[str, Callable[[np.ndarray], object]]) -> Sample | Skip:
    """One row as a sample (each field through its converter), or a Skip naming the file of the first bad field."""
    sample: Sample = {"__key__": key}
    for name, convert in converters.items():
        try:
            sample[name] = convert(arrays[name][row])
        except SampleError as err:
            return Skip(key, str(paths[name]), err.reason, f"row {row}: {err}")
    return sample


def _image(row: np.ndarray) -> np.ndarray:
    """Pixels ``[784]`` -> ``[28, 28]`` float32 divided by 255 (in the source dtype, as MultiBench does)."""
    with np.errstate(over="ignore", invalid="ignore"):  # huge float64 values become inf, reported below
        image = (np.asarray(row) / 255.0).astype(np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    if not np.isfinite(image).all():
        bad = int(image.size - np.isfinite(image).sum())
        raise SampleError("non_finite", f"image: {bad} non-finite values (after scaling to float32)")
    return image


def _audio(row: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Spectrogram ``[112 * 112]`` -> ``[112, 112]`` of ``dtype`` (uint8 for integer arrays, float32 for float ones).

    Levels must be finite and within 0..255; a fractional level is kept (float32), never refused.
    """
    values = np.asarray(row).reshape(SPEC_SIZE, SPEC_SIZE)
    if values.dtype == np.uint8 and dtype == np.uint8:
        return np.array(values)  # a copy, so the sample does not pin the memory map; uint8 is 0..255 already
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise SampleError("non_finite", "audio_spec: non-finite values")
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise SampleError("value_range", f"audio_spec: values [{low}, {high}] outside [0, 255]")
    return values.astype(dtype)  # float arrays always get float32 (features()): uint8 only holds whole levels


def _label(row: np.ndarray) -> np.int64:
    """A label row (scalar or ``[1]``) -> int64 digit; non-integral or outside 0..9 is ``label_range``."""
    value = np.asarray(row).reshape(())
    if value.dtype.kind == "f" and not (np.isfinite(value) and value == np.round(value)):
        raise SampleError("label_range", f"label: {value} is not an integer digit")
    if not 0 <= value <= 9:
        raise SampleError("label_range", f"label: {value} not in 0..9")
    return np.int64(value)


def count_raw(root: str | Path, split: str, *, mmap: bool = True) -> RawCount:
    """The split's source rows, from the arrays' headers (memory-mapped: no pixel is read).

    Args:
        root, split: as for :func:`iter_samples`; ``mmap`` is accepted for the same options and unused.

    Raises:
        ConfigError: unknown split, missing root or file.
        ValueError: the three arrays disagree on rows.
    """
    arrays, paths = _load(root, SOURCE_SPLIT[check_split(NAME, split, tuple(SOURCE_SPLIT))], mmap=True)
    rows = _split_rows(len(arrays["label"]), split)
    return raw_count(len(rows), "source row", [Path(root), *(p.parent for p in paths.values())])

CORPUS = Corpus(
    name=NAME,
    splits=("train", "valid", "test"),
    task="classification",
    features=features,
    iter_samples=iter_samples,
    sources=sources,
    describe=describe,
    count_raw=count_raw,
    iter_part=iter_part,
)
