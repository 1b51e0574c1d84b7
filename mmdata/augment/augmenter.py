"""The Augmenter: draws every random parameter once per sample, then applies the pure kernels.

Randomness: the ``rng`` handed in (``make_rng(seed, "augment", epoch, key)`` in :func:`mmdata.load`) gives one
63-bit base. Each field draws its ops in policy order from its own stream ``make_rng(base, "field", name)``
(per op: one uniform for the apply/skip decision with ``p``, then the op's parameters), so a field's draws do
not depend on which other fields a run decodes, and the same key gets the same draws in any worker.
Ops of the "geometry" group (rotate, crop, flip of image, depth, normal, label maps, video) read a fresh
``make_rng(base, "geometry")`` in every field instead: every such field sees the same uniform draws and the
same apply/skip decisions, so a marker pixel lands at the same place in all of them (reliability AUG-04); the
geometric op sequences must therefore match (checked at construction). With equal strengths the geometry is
identical; unequal per-modality strengths (TupleInfoNCE) scale the same draws. Temporal crops ("time" group)
share ``make_rng(base, "time")`` and one window in seconds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmdata.augment import registry
from mmdata.augment.audio import is_spectrogram
from mmdata.rng import make_rng
from mmdata.types import Features, Sample, field_modality, moves_as_cloud

Plan = dict[str, list[tuple[str, dict] | None]]
"""Per field, one entry per policy op: ``(kernel name, params)`` or None where the op was skipped."""

# Image-like fields whose geometric op sequences must match. Video reads the same geometry stream, so it is
# aligned with them exactly when its crop/flip list matches theirs; it has no rotate, so it is not forced to.
GEOMETRY_MODALITIES = ("image", "depth", "normal", "label")
TIME_AXIS = {"audio": -1, "video": 0}
#: Ops refused by configuration because they change what the label means (reliability AUG-06).
LABEL_CHANGING = {
    ("series", "reverse"): "time reversal turns a rising price series into a falling one",
    ("feat", "reverse"): "time reversal of a feature sequence changes what was said and shown",
    ("audio", "reverse"): "reversed speech is not the same utterance",
    ("video", "reverse"): "a reversed action is a different action",
}
MIRRORING = ("image", "depth", "normal", "label", "video")  # modalities whose flip mirrors text in images


def valid_ops(modality: str) -> list[str]:
    """Short names of the ops registered for a modality."""
    return sorted(name.rsplit("_", 1)[0] for name in registry.OPS if name.rsplit("_", 1)[1] == modality)


def _resolve(key: str, op: str, text_in_image: bool) -> str:
    """The kernel name for ``op`` ("rotate" or "rotate_image") under policy key ``key``; ValueError if invalid."""
    modality = field_modality(key)
    short, _, suffix = op.rpartition("_") if "_" in op else (op, "", modality)
    if suffix != modality:
        raise ValueError(f"op {op!r} is for modality {suffix!r} but {key!r} is {modality!r}; "
                         f"valid for {modality}: {valid_ops(modality)}")
    if (modality, short) in LABEL_CHANGING:
        raise ValueError(f"{op!r} is refused for {key!r}: {LABEL_CHANGING[modality, short]} (AUG-06)")
    if text_in_image and short == "flip" and modality in MIRRORING:
        raise ValueError(f"flip is refused for {key!r}: text_in_image=True and a flip mirrors the text (AUG-06)")
    name = f"{short}_{modality}"
    if name not in registry.OPS:
        raise ValueError(f"unknown op {op!r} for {key!r}; valid for {modality}: {valid_ops(modality)}")
    needs = registry.OPS[name].needs
    if needs and key != modality and (needs == "spectrogram") != is_spectrogram(key):
        raise ValueError(f"{name} needs a {needs} field; {key!r} is "
                         f"{'a spectrogram' if is_spectrogram(key) else 'a waveform'} (name it audio_spec...)")
    return name


def _check_strength(strength: float | Mapping[str, float]) -> dict[str, float] | float:
    values = strength.items() if isinstance(strength, Mapping) else [("strength", strength)]
    for name, value in values:
        if name != "strength":
            field_modality(name)
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"strength {name}={value} must be in [0, 1]")
    return {k: float(v) for k, v in strength.items()} if isinstance(strength, Mapping) else float(strength)


@dataclass
class Augmenter:
    """Per-sample augmentation driven by a policy; callable as ``augmenter(sample, rng) -> new sample``.

    Attributes:
        policy: field name or modality -> op names in order (``{"image": ["rotate", "noise"]}``; full names
            such as ``"rotate_image"`` are accepted). A field-name key wins over its modality's key; fields
            matched by neither, and ``__key__``, pass through as the same objects.
        strength: one scalar in [0, 1] scaling every magnitude, or one per modality / field name.
        p: probability that each op of the policy is applied to a sample.
        rates: sample rate (audio, Hz) or frame rate (video, fps) per field, for aligned temporal crops.
        share_geometry: one geometric draw for all image-like fields (False: independent per field).
        text_in_image: images carry text (memes, digits, signs): flips are refused.
        check_finite: after every op, raise FloatingPointError naming key, field and op on NaN or Inf.

    Raises:
        ValueError: unknown op, op of another modality, label-changing op, strength outside [0, 1], a
            policy key without a strength, or geometric op sequences that differ between image-like keys.

    Example:
        >>> aug = Augmenter({"image": ["rotate", "crop", "noise"], "audio_spec": ["timemask", "freqmask"]},
        ...                 strength={"image": 0.4, "audio": 0.2}, text_in_image=True)
        >>> loader = mmdata.load("avmnist", "train", augment=aug, num_workers=2)  # same batches for any workers
    """

    policy: Mapping[str, Sequence[str]]
    strength: float | Mapping[str, float] = 0.5
    p: float = 1.0
    rates: Mapping[str, float] = field(default_factory=dict)
    share_geometry: bool = True
    text_in_image: bool = False
    check_finite: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Mapping):
            raise ValueError(f"policy must map field or modality -> op names, got {type(self.policy).__name__}")
        self.policy = {key: tuple(_resolve(key, op, self.text_in_image) for op in ops)
                       for key, ops in self.policy.items()}
        self.strength = _check_strength(self.strength)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p={self.p} must be in [0, 1]")
        self.rates = {name: float(rate) for name, rate in self.rates.items()}
        for key in self.policy:
            self.strength_of(key)
        self._check_geometry()

    def _check_geometry(self) -> None:
        if not self.share_geometry:
            return
        sequences = {key: tuple(n.rsplit("_", 1)[0] for n in ops if registry.OPS[n].group == "geometry")
                     for key, ops in self.policy.items() if field_modality(key) in GEOMETRY_MODALITIES}
        if len(set(sequences.values())) > 1:
            raise ValueError(f"with share_geometry the geometric ops must match across image-like fields, got "
                             f"{sequences}; use the same rotate/crop/flip list or share_geometry=False")

    def strength_of(self, name: str) -> float:
        """The strength for a field or policy key (field name first, then its modality)."""
        if isinstance(self.strength, float):
            return self.strength
        for key in (name, field_modality(name)):
            if key in self.strength:
                return self.strength[key]
        raise ValueError(f"no strength for {name!r}; strength keys: {sorted(self.strength)}")

    def ops_for(self, name: str) -> tuple[str, ...]:
        """Kernel names applied to field ``name`` (empty: passes through)."""
        try:
            modality = field_modality(name)
        except ValueError:
            return ()  # not a field (``__key__``, lengths, masks): passes through
        ops = self.policy.get(name, self.policy.get(modality, ()))
        needs = {n: registry.OPS[n].needs for n in ops}
        return tuple(n for n in ops if not needs[n] or (needs[n] == "spectrogram") == is_spectrogram(name))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Augment one sample: draw every parameter from ``rng`` once, then apply the kernels."""
        return self.apply(sample, self.draw(sample, rng))

    def draw(self, sample: Sample, rng: np.random.Generator) -> Plan:
        """All random parameters for one sample. Reads only shapes and dtypes (and text), never pixels."""
        base = int(rng.integers(2 ** 63))
        fields = {name: self.ops_for(name) for name, value in sample.items() if value is not None}
        fields = {name: ops for name, ops in fields.items() if ops and self.strength_of(name) > 0}
        context = self._time_context(sample, fields)
        return {name: self._draw_field(base, name, ops, sample[name], context.get(name, {}))
                for name, ops in fields.items()}

    def _draw_field(self, base: int, name: str, ops: tuple[str, ...], value: Any, ctx: dict) -> list:
        steps: list[tuple[str, dict] | None] = []
        streams: dict[str, np.random.Generator] = {}
        current = _layout(value)
        for kernel in ops:
            op = registry.OPS[kernel]
            shared = op.group == "time" or (op.group == "geometry" and self.share_geometry)
            group = op.group if shared else "field"
            if group not in streams:
                streams[group] = make_rng(base, group) if shared else make_rng(base, "field", name)
            stream = streams[group]
            if stream.random() >= self.p:
                steps.append(None)
                continue
            params = op.draw(stream, self.strength_of(name), current, ctx if op.group == "time" else {})
            steps.append((kernel, params))
            if op.changes_length:  # later draws see the new length / word count
                current = _layout(op.kernel(current, **params))
        return steps

    def _time_context(self, sample: Sample, fields: dict[str, tuple[str, ...]]) -> dict[str, dict]:
        """Rate and shared duration for the fields that take a temporal crop (see audio.time_window)."""
        timed = [n for n, ops in fields.items() if any(registry.OPS[k].group == "time" for k in ops)]
        lengths = {n: int(np.shape(sample[n])[TIME_AXIS[field_modality(n)]]) for n in timed}
        if not timed:
            return {}
        if all(n in self.rates for n in timed):  # seconds; otherwise every field spans one unit
            rates = {n: self.rates[n] for n in timed}
        else:
            rates = {n: float(max(lengths[n], 1)) for n in timed}
        duration = min(lengths[n] / rates[n] for n in timed)
        return {n: {"rate": rates[n], "duration": duration} for n in timed}

    def apply(self, sample: Sample, plan: Plan) -> Sample:
        """A new sample dict with the planned kernels applied; other entries are the same objects."""
        out = dict(sample)
        for name, steps in plan.items():
            value = sample[name]
            for step in steps:
                if step is not None:
                    value = registry.KERNELS[step[0]](value, **step[1])
                    if self.check_finite:
                        _check_finite(value, sample.get("__key__"), name, step[0])
            out[name] = value
        return out

    @classmethod
    def from_features(cls, features: Features, *, policy: Mapping[str, Sequence[str]] | None = None,
                      **kwargs: Any) -> Augmenter:
        """An Augmenter for a corpus schema: rates from the Fields, the default policy unless given."""
        rates = {name: spec.rate for name, spec in features.items() if spec.rate}
        rates.update(kwargs.pop("rates", {}))
        if policy is None:
            policy = default_policy(features, text_in_image=kwargs.get("text_in_image", False))
        return cls(policy, rates=rates, **kwargs)


def _layout(value: Any) -> Any:
    """What draws may read: a zero-strided stand-in with the array's shape and dtype, or the text itself."""
    if isinstance(value, np.ndarray):
        return np.broadcast_to(np.zeros((), value.dtype), value.shape)
    return value


def _check_finite(value: Any, key: Any, name: str, kernel: str) -> None:
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
        raise FloatingPointError(f"augmentation {kernel} made NaN/Inf in sample {key} field {name} (AUG-02)")


def default_policy(features: Features, *, text_in_image: bool = False) -> dict[str, tuple[str, ...]]:
    """:data:`~mmdata.augment.AUGMENTERS` per field of a schema, keeping only ops that fit each field.

    Frequency masks go to spectrograms only, gain to waveforms only, temporal crops to fields whose time axis is
    variable, flips nowhere when ``text_in_image``; 2-D label maps take the image's geometric ops. The point
    kernels move the xyz of a ``[N, 3 + F]`` cloud: among ``points`` fields only the cloud ``points`` takes
    them (per-point feature fields such as ``points_rgb`` [N, 3] and ``points_height`` [N, 1] take none), and
    ``subsample`` only when no feature field rides along (its rows are drawn per field, so the cloud's would
    no longer match its features').
    """
    point_fields = [name for name in features if field_modality(name) == "points"]
    policy: dict[str, tuple[str, ...]] = {}
    for name, spec in features.items():
        modality = field_modality(name)
        ops = registry.AUGMENTERS.get(modality, ())
        if modality == "points":
            ops = tuple(o for o in ops if o != "subsample" or len(point_fields) == 1) if moves_as_cloud(name) else ()
        if modality == "label":
            ops = tuple(o for o in registry.AUGMENTERS["image"] if f"{o}_label" in registry.OPS) \
                if len(spec.shape) == 2 else ()
        keep = []
        for short in ops:
            op = registry.OPS[f"{short}_{modality}"]
            if op.needs and (op.needs == "spectrogram") != is_spectrogram(name):
                continue
            if op.changes_length and spec.shape and spec.shape[TIME_AXIS[modality]] is not None:
                continue
            if text_in_image and short == "flip" and modality in MIRRORING:
                continue
            keep.append(short)
        # An empty entry for a point feature field: the key ``points`` is also the modality's, which an
        # Augmenter would otherwise apply to every ``points_*`` field without an entry of its own.
        if keep or modality == "points":
            policy[name] = tuple(keep)
    return policy
