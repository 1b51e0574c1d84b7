"""Methods: thin modules with ``build_model``, ``training_step``, ``predict`` and ``embed``, registered by name.

``methods.loop`` trains any of them; encoders and fusions they share live in ``methods.blocks``.
"""
from __future__ import annotations

from types import ModuleType

from methods import late_fusion
from methods import point_boxes
from methods import rgbd_seg

METHODS: dict[str, ModuleType] = {
    "late_fusion": late_fusion,
    "rgbd_seg": rgbd_seg,
    "point_boxes": point_boxes,
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
