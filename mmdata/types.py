"""The shared shapes: modalities, field schemas, sample keys and negative tuples.

Every arrow of the pipeline (reader -> writer -> reader -> sampler -> method) passes one of these plain
shapes, never a framework object, so each part can be replaced and tested alone.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

#: The closed vocabulary of modalities. Every sample field name starts with one of them
#: (``image``, ``feat_audio``, ``text_plot``), so codecs, augmenters and samplers dispatch on the name.
MODALITIES = ("image", "depth", "normal", "points", "audio", "video", "text", "feat", "series", "label", "meta")

#: Sample keys: ``<corpus>/<split>/<source id>``; no dots, because WebDataset splits a member name at the
#: first dot of its basename (webdataset#237), and no characters a file system or URL would mangle.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_FIELD_PATTERN = re.compile(r"^[a-z]+(_[a-z0-9]+)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

#: Label value of a sample kept without a label (a Field declares it with ``unlabeled=UNLABELED``); the same
#: convention as Hugging Face datasets' -1 on test splits whose labels are withheld.
UNLABELED = -1

#: Codecs a field may declare (file extension of its tar member): numpy arrays, UTF-8 text, class ids, JSON,
#: images, video clips (uint8 [T, H, W, 3] as MPEG-4 in an .mp4 container) and tables (Arrow IPC stream).
CODECS = ("npy", "txt", "cls", "json", "png", "jpg", "mp4", "arrow")

Sample = dict[str, Any]
"""A plain dict: ``__key__`` plus one entry per field (numpy array, str, int, float or JSON value)."""


def field_modality(name: str) -> str:
    """The modality a field name starts with (``feat_audio`` -> ``feat``).

    Raises:
        ValueError: the name is malformed or does not start with a known modality.
    """
    if not _FIELD_PATTERN.match(name):
        raise ValueError(f"field name {name!r} must be lower-case words joined by '_' (e.g. 'feat_audio')")
    modality = name.split("_", 1)[0]
    if modality not in MODALITIES:
        raise ValueError(f"field {name!r} does not start with a modality; known: {', '.join(MODALITIES)}")
    return modality


def moves_as_cloud(name: str) -> bool:
    """Whether the point kernels (rotate, jitter, scale: xyz first) apply to a field: only the cloud
    ``points``; other ``points_*`` fields (``points_rgb`` [N, 3], ``points_height`` [N, 1]) are per-point
    features aligned with its rows."""
    return name == "points"


@dataclass(frozen=True)
class Field:
    """Schema of one sample field.

    Attributes:
        dtype: numpy dtype name of array fields ("float32", "uint8"), "str" for text, "int64"/"float32" for labels.
        shape: array shape with ``None`` for variable axes (``(None, 5)`` = [time, dim]); ``()`` for scalars.
        codec: how the field is stored in the tar (one of CODECS); the member is ``<key>.<field>.<codec>``.
        classes: class names of a categorical label, in index order.
        value_range: inclusive (low, high) bounds checked on every sample (labels, pixel ranges), or None.
        rate: sample rate (audio, Hz) or frame rate (video, fps) when relevant.
        description: provenance and units, in words.
        unlabeled: for a class label, the value marking a sample kept without a label (:data:`UNLABELED`,
            e.g. the Hateful Memes test file whose labels were withheld), or None when every sample is labeled.
    """

    dtype: str
    shape: tuple[int | None, ...]
    codec: str
    classes: tuple[str, ...] | None = None
    value_range: tuple[float, float] | None = None
    rate: float | None = None
    description: str = ""
    unlabeled: int | None = None

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; known: {', '.join(CODECS)}")

    @property
    def variable_axes(self) -> tuple[int, ...]:
        """Indices of the axes whose length varies between samples."""
        return tuple(i for i, n in enumerate(self.shape) if n is None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (for the manifest)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Field:
        """Inverse of :meth:`to_json`."""
        data = dict(data)
        data["shape"] = tuple(data["shape"])
        for name in ("classes", "value_range"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


Features = dict[str, Field]
"""A corpus schema: field name -> Field. Names are validated by :func:`check_features`."""


def check_features(features: Features) -> None:
    """Raise ValueError unless every field name starts with a modality and exactly one ``label`` field exists."""
    for name in features:
        field_modality(name)
    labels = [n for n in features if field_modality(n) == "label"]
    if len(labels) != 1:
        raise ValueError(f"a corpus declares exactly one label field, got {labels}")


def make_key(corpus: str, split: str, source_id: str) -> str:
    """Stable sample key ``<corpus>/<split>/<source id>`` with unsafe characters replaced by '-'.

    The replacement is not injective (``a.b`` and ``a-b`` collide), which is why the shard writer rejects
    duplicate keys and names both sources.
    """
    safe = _UNSAFE.sub("-", str(source_id)).strip("-")
    key = f"{corpus}/{split}/{safe}"
    if not KEY_PATTERN.match(key):
        raise ValueError(f"cannot build a key from source id {source_id!r} (corpus {corpus}, split {split})")
    return key


@dataclass(frozen=True)
class Tuples:
    """Negative tuples as an index array, the output of every negative sampler.

    Attributes:
        idx: int64 array ``[n, k, M]``: negative ``j`` of anchor ``b`` takes modality ``m`` from item
            ``idx[b, j, m]`` (a batch row for in-batch samplers, an index row for dataset-level ones);
            :data:`DROPPED` marks a dropped modality.
        modalities: the field names giving the order of the last axis (length M).
    """

    idx: np.ndarray
    modalities: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.idx.ndim != 3 or self.idx.shape[2] != len(self.modalities):
            raise ValueError(f"Tuples.idx must be [n, k, {len(self.modalities)}], got {self.idx.shape}")


#: Sentinel index in :class:`Tuples` meaning "this modality is dropped".
DROPPED = -1


#: Sample entry listing the index rows one stored sample expands into (see :class:`View`); each entry is a
#: dict with ``id`` (appended to the key: ``<key>/<id>``), ``label`` and the view's parameter (``pick`` or
#: ``start``). The writer turns it into index rows and strips it.
ROWS = "__rows__"


@dataclass(frozen=True)
class View:
    """How one stored sample expands into several training samples at read time, from its index rows.

    Bytes then grow with what is stored, not with what is derived: SNLI-VE stores an image once with all its
    hypotheses (``pick``: row ``j`` takes element ``j`` of each view field), a price history is stored once
    and cut into overlapping windows (``window``: row takes ``[start, start + length)`` of each view field).
    The label of a viewed sample always comes from its index row.

    Attributes:
        kind: "pick" or "window".
        fields: the stored fields the view applies to (their first axis is the one picked or windowed).
        length: window length in steps (``window`` only).
    """

    kind: str
    fields: tuple[str, ...]
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pick", "window") or (self.kind == "window") != (self.length is not None):
            raise ValueError(f"a View is 'pick' (no length) or 'window' (with length), got {self.kind}, {self.length}")

    @property
    def param(self) -> str:
        """The index column holding each row's parameter: ``pick`` or ``start``."""
        return "pick" if self.kind == "pick" else "start"

    def features(self, stored: Features, label: str) -> Features:
        """The schema of viewed samples, given the stored schema and the label field name."""
        out = dict(stored)
        for name in self.fields:
            rest = stored[name].shape[1:]
            shape = rest if self.kind == "pick" else (self.length, *rest)
            out[name] = replace(stored[name], shape=shape)
        out[label] = replace(stored[label], shape=())
        return out

    def apply(self, sample: Sample, value: int) -> Sample:
        """The viewed sample for one row (``value`` = its pick index or window start); input not mutated.

        View fields a reader did not decode (not requested) are absent from ``sample`` and stay absent.
        """
        out = dict(sample)
        for name in self.fields:
            if name not in sample:
                continue
            out[name] = sample[name][value] if self.kind == "pick" else sample[name][value:value + self.length]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (for the manifest)."""
        return {"kind": self.kind, "fields": list(self.fields), "length": self.length}
