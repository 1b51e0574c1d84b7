"""Augmenters: pure ``<op>_<modality>`` kernels, an Augmenter that draws parameters once per sample.

- :data:`KERNELS` maps ``"<op>_<modality>"`` (``rotate_image``, ``timemask_audio``) to a pure kernel
  ``kernel(value, **params) -> new value``: explicit parameters, no randomness, the input never mutated,
  dtype kept (integers rounded and clipped), shape kept except the temporal crops.
- :data:`OPS` holds each kernel with the distribution of its parameters (:class:`~mmdata.augment.base.Op`).
- :data:`AUGMENTERS` is the default policy (op names in order) per modality.
- :class:`Augmenter` is the ``augment(sample, rng) -> sample`` hook of :func:`mmdata.load`; one scalar
  ``strength`` in [0, 1] (or one per modality, as TupleInfoNCE optimises it) scales every magnitude:
  0 is the identity, 1 the maxima below.
- :func:`~mmdata.augment.batched.augment_batch` applies the same draws to a collated batch with torch.

The three registries are defined in :mod:`mmdata.augment.registry` and exported here.

Maxima at strength 1 (module constants):

=========  ===============================================================================================
image      rotate +-45 deg; crop keeps >= 50% of the area (resized back); flip p 0.5; jitter brightness,
           contrast, saturation 1 +- 0.4; noise std 0.1 of the range (255 for uint8, max - min for floats)
depth      rotate / crop / flip shared with the image, nearest neighbour, values never jittered
normal     rotate / crop / flip shared with the image; vectors rotated (x negated on flip), unit length
label      2-D label maps follow the image geometry (nearest); scalar labels pass through
points     rotate +-30 deg about z; jitter std 0.01 of the extent; scale 1 +- 0.2; height noise std 0.1
           of its range; subsample replaces up to 50% of the points by duplicates
audio      shift +-10% of T; gain +-6 dB (waveforms); noise std 0.1 of the range; time mask <= 20% of T;
           frequency mask <= 20% of F (spectrograms); temporal crop keeps >= 50% (aligned with video)
video      temporal crop (aligned with audio); spatial crop and flip as the image; noise as the image
text       word dropout p 0.2 (never every word); adjacent word swap p 0.2
feat       noise std 0.5 of each dimension's std; time mask <= 20% of T
series     noise std 0.5 of each dimension's std (no time reversal: label-changing)
=========  ===============================================================================================
"""
from __future__ import annotations

# The registries live in mmdata.augment.registry, so that the Augmenter can read them without importing this
# package while it is still initialising (no import cycle).
# The torch forms live in mmdata.augment.batched, imported on demand (workers need numpy only).
from mmdata.augment.augmenter import Augmenter, default_policy
from mmdata.augment.base import Op
from mmdata.augment.registry import AUGMENTERS, KERNELS, OPS

__all__ = ["AUGMENTERS", "KERNELS", "OPS", "Augmenter", "Op", "default_policy"]
