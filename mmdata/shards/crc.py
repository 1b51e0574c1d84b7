"""crc32 of member payloads, as ``zlib.crc32`` computes it (same polynomial, same values, same chaining).

ISA-L's implementation (the optional extra ``fast``: ``pip install mmdata[fast]``, package ``isal``) runs about
ten times faster than zlib's (~20 vs ~2 GB/s here), which is what bounds a first read of verified shards; zlib's
is the fallback when it is not installed.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

try:
    from isal.isal_zlib import crc32 as _fast
except ImportError:  # the extra is optional
    _fast = None

#: ``crc32(data, start=0) -> int`` for any C-contiguous buffer (bytes, memoryview, numpy array).
crc32: Callable[..., int] = _fast or zlib.crc32
#: Which implementation :data:`crc32` is ("isal" or "zlib").
IMPLEMENTATION = "isal" if _fast is not None else "zlib"

