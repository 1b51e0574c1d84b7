"""Methods: one thin module per method, registered by name in :data:`METHODS`.

``methods.protocol`` states the contract every method module meets (``build_model``, ``training_step``,
``predict``, ``embed``, an optional ``fit``) and what ``methods.loop``, the one training loop, does for it.
What methods share: encoders in ``methods.blocks`` (the text encoder in ``methods.text``), fusion modules
in ``methods.fusions`` (``FUSIONS``), reusable losses in ``methods.losses``.
"""
from __future__ import annotations

from types import ModuleType

from methods import cmvqvae
from methods import early_fusion
from methods import late_fusion
from methods import mdm
from methods import point_boxes
from methods import profusion
from methods import refnet
from methods import rgbd_seg
from methods import tupleinfonce

METHODS: dict[str, ModuleType] = {
    "late_fusion": late_fusion,
    "early_fusion": early_fusion,
    "refnet": refnet,  # ReFNet; ReFNet_MS with ms_weight > 0
    "profusion": profusion,  # Progressive Fusion over late fusion with any fusion
    "cmvqvae": cmvqvae,  # CM-VQVAE: per-modality VQ-VAEs + a shared channel mask (compl / contr, zeta)
    "tupleinfonce": tupleinfonce,  # TupleInfoNCE: contrastive pretraining (tuple | infonce | none), then fine-tuning
    "mdm": mdm,  # MDM: late fusion + a statistic network's dependency bound (dv | nwj | wasserstein | none)

    "rgbd_seg": rgbd_seg,  # task-specific: RGB-D semantic segmentation (class maps)
    "point_boxes": point_boxes,  # task-specific: 3D box detection from point clouds
}


def get_method(name: str) -> ModuleType:
    """The registered method module ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "get_method"]
