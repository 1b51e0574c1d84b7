"""Raw image intake shared by the vision-language readers (MM-IMDB, Hateful Memes, SNLI-VE).

Images (reliability.md 6.2): the header is read first (Pillow parses it without decoding the pixels), so an
HTML page saved as ``.jpg`` is ``unidentified_image`` and a decompression bomb is ``too_large`` before any
decode. The source bytes are kept when they already are what the field declares (same format, RGB, and the
configured size when there is one): the shard holds the file as downloaded and the check in
:mod:`mmdata.corpora.check` decodes it once to validate. Otherwise the image is decoded once (cv2, RGB),
resized once with ``INTER_AREA`` and stored as an array, which the codec encodes (JPEG quality 90). An EXIF
orientation tag is never applied, by any decode, as MMF's and torchvision's loaders (``PIL.Image.open`` without
``exif_transpose``) do not apply it; an image carrying one (orientation 2-8) counts ``exif_orientation_ignored``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.errors import ConfigError, SampleError
from mmdata.types import Field

#: Largest image accepted, in pixels, checked from the header before decoding (a 20000 x 20000 PNG bomb
#: is 400 MP); Flickr30k, IMDb posters and memes are all far below it.
MAX_PIXELS = 50_000_000
#: Pillow format name of each image codec.
FORMATS = {"jpg": "JPEG", "png": "PNG"}
#: EXIF tag of the orientation (1: stored as displayed; 2-8: flips and rotations a viewer applies).
ORIENTATION = 0x0112

Size = tuple[int, int]


def parse_size(image_size: Any, corpus: str) -> Size | None:
    """``image_size`` param -> (height, width), or None (keep the source size).

    Args:
        image_size: None, an int (square) or a [height, width] pair of positive ints.
        corpus: named in the error.

    Raises:
        ConfigError: anything else.
    """
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0:
        return image_size, image_size
    if (isinstance(image_size, (list, tuple)) and len(image_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise ConfigError(f"{corpus}: image_size must be null (keep source bytes), a positive int or "
                      f"[height, width], got {image_size!r} (fix corpora.{corpus}.reader.image_size)")


def image_field(size: Size | None, source_codec: str, what: str) -> Field:
    """The image Field: source bytes of ``source_codec`` at any size, or resized RGB stored as JPEG."""
    if size is None:
        return Field("uint8", (None, None, 3), source_codec, value_range=(0, 255),
                     description=f"{what}, RGB [height, width, 3], source bytes as downloaded")
    return Field("uint8", (*size, 3), "jpg", value_range=(0, 255),
                 description=f"{what}, RGB [height, width, 3], resized once at shard time to {size[0]}x{size[1]} "
                             f"(cv2 INTER_AREA, aspect not kept) unless already that size and JPEG")


def read_file(path: Path, what: str) -> bytes:
    """The bytes of a raw file; SampleError ``missing_<what>`` or ``empty_file``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SampleError(f"missing_{what}", f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise SampleError(f"missing_{what}", f"{what} file {path} unreadable: {exc}") from exc
    if not data:
        raise SampleError("empty_file", f"{what} file {path} has zero bytes")
    return data


def _header(data: bytes) -> tuple[str, str, Size, int]:
    """(format, mode, (height, width), EXIF orientation) from the header only; SampleError when unidentifiable or
    too large."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
            orientation = _orientation(image)
    except Image.DecompressionBombError as exc:
        raise SampleError("too_large", f"image: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SampleError("unidentified_image", f"image: not a readable image ({exc})") from exc
    if width * height > MAX_PIXELS:
        raise SampleError("too_large", f"image: {width}x{height} exceeds {MAX_PIXELS} pixels")
    return str(fmt), mode, (height, width), orientation


def _orientation(image: Any) -> int:
    """The EXIF orientation of an open Pillow image; 1 (as stored) without EXIF or when the EXIF is unreadable."""
    if "exif" not in image.info:  # checked first: a PNG's getexif() would decode the pixels to look further
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about a corrupt EXIF block; the pixels are still fine
            value = image.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block must never cost the image (reliability IMG-09)
        return 1
    return value if isinstance(value, int) else 1


def image_shape(data: bytes) -> Size:
    """(height, width) of encoded image bytes, from the header only; SampleError when unreadable."""
    return _header(data)[2]


def load_image(data: bytes, codec: str, size: Size | None) -> tuple[bytes | np.ndarray, tuple[str, ...]]:
    """An image value for a field of ``codec`` and target ``size``, and the repairs applied.

    Args:
        data: the raw file's bytes.
        codec: the field's codec ("jpg" or "png"): source bytes are kept only in that format.
        size: (height, width) to resize to, or None to keep the source size.

    Returns:
        ``(value, repairs)``: the source bytes (decoded later by the check) or an RGB uint8 array
        [height, width, 3]; repairs name the fixes of the input (``image_<mode>_to_rgb`` for grey, CMYK,
        palette or alpha images; ``image_<format>_as_<codec>`` when bytes of another format are kept as
        ``codec`` without resizing; ``exif_orientation_ignored`` for an EXIF orientation of 2-8, never applied),
        never the configured resize.

    Raises:
        SampleError: ``unidentified_image``, ``too_large`` or ``decode_error``.
    """
    fmt, mode, source_size, orientation = _header(data)
    # Recorded, not applied (MMF/torchvision read the stored pixel grid): the count says how many are affected.
    oriented = ("exif_orientation_ignored",) if 2 <= orientation <= 8 else ()
    if fmt == FORMATS[codec] and mode == "RGB" and size in (None, source_size):
        return data, oriented
    import cv2  # lazily: readers that keep bytes never need it

    # IMREAD_COLOR alone would apply the EXIF orientation: resized images would then differ from kept bytes.
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if array is None:
        raise SampleError("decode_error", f"image: {fmt} {mode} {source_size} could not be decoded")
    if size is not None and array.shape[:2] != size:
        array = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    # Resizing (and the JPEG it is stored as) is the configured transform; only fixes of the input are repairs.
    repairs = [f"image_{mode.lower()}_to_rgb"] if mode != "RGB" else []
    repairs += oriented
    if size is None and fmt != FORMATS[codec]:
        repairs.append(f"image_{fmt.lower()}_as_{codec}")
    return np.ascontiguousarray(array[:, :, ::-1]), tuple(repairs)
