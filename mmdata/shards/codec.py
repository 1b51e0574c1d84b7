"""Field codecs: one encode/decode pair per tar member extension.

Encoding is deterministic (same value -> same bytes), which the byte-identical shard guarantee needs.
Decoding of ``.npy`` parses the header once per distinct header and maps the payload with
``np.frombuffer`` (zero copy): 2-3x faster than ``np.load(BytesIO)``, webdataset's default (design 5b).
"""
from __future__ import annotations

import ast
import io
import json
import math
from functools import lru_cache
from typing import Any

import numpy as np

from mmdata.types import Field

_NPY_MAGIC = b"\x93NUMPY"
JPEG_QUALITY = 90  # webdataset's default is 100: twice the bytes for no visible gain (design 5b)


class CodecError(ValueError):
    """Bytes that cannot be decoded as the declared codec."""


def _encode_npy(value: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
    return buf.getvalue()


@lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    meta = ast.literal_eval(header.decode("latin1"))
    dtype = np.dtype(meta["descr"])
    if dtype.hasobject:
        raise CodecError("object arrays are refused (they would need pickle)")
    return dtype, tuple(meta["shape"]), bool(meta["fortran_order"])


def _decode_npy(data: bytes) -> np.ndarray:
    if data[:6] != _NPY_MAGIC:
        raise CodecError("not an .npy payload (bad magic)")
    major = data[6]
    if major == 1:
        start, length = 10, int.from_bytes(data[8:10], "little")
    elif major in (2, 3):
        start, length = 12, int.from_bytes(data[8:12], "little")
    else:
        raise CodecError(f"unsupported .npy version {major}")
    dtype, shape, fortran = _npy_header(bytes(data[start:start + length]))
    count = math.prod(shape)
    offset = start + length
    if len(data) - offset != count * dtype.itemsize:
        raise CodecError(f".npy payload has {len(data) - offset} bytes, header says {count * dtype.itemsize}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


def _encode_image(value: Any, ext: str) -> bytes:
    import cv2  # imported lazily: most runs never touch images

    if isinstance(value, (bytes, bytearray)):
        return bytes(value)  # source bytes kept as they are (a JPEG poster is not re-encoded)
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # cv2 works in BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + ext, np.ascontiguousarray(array), params)
    if not ok:
        raise CodecError(f"cv2 could not encode a {array.dtype} {array.shape} array as {ext}")
    return buf.tobytes()


def _decode_image(data: bytes) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise CodecError("image bytes could not be decoded")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1].copy()
    return array


def encode(value: Any, field: Field) -> bytes:
    """Bytes of one field value under the field's codec.

    Args:
        value: numpy array (npy/png/jpg), str (txt), int (cls), JSON value or numpy scalar (json),
            or source image bytes (png/jpg, stored unchanged).
        field: the field's schema; ``field.codec`` selects the encoder.
    """
    codec = field.codec
    if codec == "npy":
        return _encode_npy(value)
    if codec == "txt":
        return str(value).encode("utf-8")
    if codec == "cls":
        return str(int(value)).encode("ascii")
    if codec == "json":
        value = value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _encode_image(value, codec)


def decode(data: bytes, field: Field) -> Any:
    """Inverse of :func:`encode`: numpy arrays for npy/png/jpg, str, int, or JSON values.

    Raises:
        CodecError: the bytes are not valid for the codec.
    """
    codec = field.codec
    try:
        if codec == "npy":
            return _decode_npy(data)
        if codec == "txt":
            return bytes(data).decode("utf-8")
        if codec == "cls":
            return int(bytes(data))
        if codec == "json":
            return json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, SyntaxError) as exc:
        raise CodecError(f"{codec}: {exc}") from exc
    return _decode_image(data)
