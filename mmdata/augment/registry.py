"""The augmentation registries (exported by :mod:`mmdata.augment`): kernels, ops and default policies.

They sit in their own module so that :mod:`mmdata.augment.augmenter` can read them while the package is
still importing (the package exports the Augmenter, the Augmenter reads the registries: no cycle).
"""
from __future__ import annotations

from collections.abc import Callable

from mmdata.augment import audio, image, points, sequence, text, video
from mmdata.augment.base import Op

#: ``"<op>_<modality>"`` -> the kernel with the distribution of its parameters.
OPS: dict[str, Op] = {**image.OPS, **points.OPS, **audio.OPS, **video.OPS, **text.OPS, **sequence.OPS}

#: ``"<op>_<modality>"`` -> the pure kernel ``kernel(value, **params) -> new value``.
KERNELS: dict[str, Callable] = {name: op.kernel for name, op in OPS.items()}

#: The default policy: op short names, in order, per modality.
AUGMENTERS: dict[str, tuple[str, ...]] = {
    "image": ("rotate", "crop", "flip", "jitter", "noise"),
    "depth": ("rotate", "crop", "flip"),
    "normal": ("rotate", "crop", "flip"),
    "points": ("rotate", "jitter", "scale", "heightnoise", "subsample"),
    "audio": ("shift", "gain", "noise", "timemask", "freqmask"),
    "video": ("timecrop", "crop", "flip"),
    "text": ("dropout", "swap"),
    "feat": ("noise", "timemask"),
    "series": ("noise",),
}
