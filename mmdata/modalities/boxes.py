"""SUN RGB-D 3D boxes: ``annotation3Dfinal/index.json`` polygons -> VoteNet boxes, as the toolbox and VoteNet do.

``readframeSUNRGBD.m`` reads each object's ``polygon{1}``: four floor corners ``X``, ``Z`` and ``Ymin``, ``Ymax``
in the annotation frame, whose ``(X, Z, -Y)`` is the upright depth frame. With ``x = X``, ``y = Z``::

    coeffs   = |[|c1 - c0|, |c2 - c1|, Ymax - Ymin]| / 2          (half sizes)
    centroid = [(x0 + x2) / 2, (y0 + y2) / 2, -(Ymin + Ymax) / 2]
    orientation = midpoint(c0, c1) - centroid (normalised)

VoteNet (``sunrgbd_utils.SUNObject3d``, ``sunrgbd_data.py``) then writes ``[cx, cy, cz, l, w, h, heading, class]``
with ``w = coeffs(1)``, ``l = coeffs(2)``, ``h = coeffs(3)`` and ``heading = -atan2(o_y, o_x)``. Objects named
wall/floor/ceiling, ``null`` entries and classes outside VoteNet's ten are not boxes; a name ``"chair:office"``
is class ``chair`` (the toolbox cuts at ``:`` and a ``_`` or space before it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mmdata.errors import FileError

#: VoteNet's 10 SUN RGB-D classes in its class-index order (``sunrgbd_utils.type2class``).
CLASSES = ("bed", "table", "sofa", "chair", "toilet", "desk", "dresser", "night_stand", "bookshelf", "bathtub")
#: Repair code of a box dropped for a malformed polygon or a non-positive / non-finite size.
DROPPED = "dropped_bad_box"


def class_name(name: object) -> str:
    """The toolbox's class of an object name: text before ``:`` (minus a ``_``/space right before it)."""
    if not isinstance(name, str):
        return ""
    cut = name.find(":")
    if cut <= 0:
        return name
    return name[:cut - 1] if name[cut - 1] in "_ " else name[:cut]


def polygon_box(polygon: object) -> np.ndarray | None:
    """VoteNet box ``[7]`` (cx, cy, cz, l, w, h, heading) of an object's polygon list, or None when malformed.

    None covers: no polygon, fewer than 3 corners, non-numeric or non-finite values, and a non-positive size
    (two coincident corners or ``Ymin == Ymax``), which the toolbox would turn into NaN or a flat box.
    """
    try:
        first = polygon[0]  # type: ignore[index]
        x = np.asarray(first["X"], dtype=np.float64)
        y = np.asarray(first["Z"], dtype=np.float64)
        y_min, y_max = float(first["Ymin"]), float(first["Ymax"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    if x.ndim != 1 or x.shape != y.shape or len(x) < 3 or not np.isfinite([*x, *y, y_min, y_max]).all():
        return None
    edge1, edge2 = math.hypot(x[1] - x[0], y[1] - y[0]), math.hypot(x[2] - x[1], y[2] - y[1])
    w, l, h = edge1 / 2, edge2 / 2, abs(y_max - y_min) / 2
    if min(w, l, h) <= 0:
        return None
    cx, cy = (x[0] + x[2]) / 2, (y[0] + y[2]) / 2
    ox, oy = (x[0] + x[1]) / 2 - cx, (y[0] + y[1]) / 2 - cy
    return np.array([cx, cy, -(y_min + y_max) / 2, l, w, h, -math.atan2(oy, ox)])


def read_boxes(path: Path, classes: tuple[str, ...] = CLASSES) -> tuple[np.ndarray, list[str]]:
    """The boxes of one ``annotation3Dfinal/index.json``.

    Returns:
        ``(boxes [n, 8] float32, repairs)``: ``[cx, cy, cz, l, w, h, heading, class]`` in file order, and one
        :data:`DROPPED` code per box of a known class that was dropped as malformed.

    Raises:
        FileError: ``decode_error`` (not JSON) or ``bad_annotation`` (no ``objects`` list).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileError("decode_error", f"not JSON ({exc})", path) from exc
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, list):
        raise FileError("bad_annotation", "no 'objects' list", path)
    boxes, repairs = [], []
    for obj in objects:
        if not isinstance(obj, dict):  # the release has null entries for deleted objects
            continue
        name = class_name(obj.get("name"))
        if name not in classes:
            continue
        box = polygon_box(obj.get("polygon"))
        if box is None:
            repairs.append(DROPPED)
            continue
        boxes.append(np.append(box, classes.index(name)))
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 8), repairs
