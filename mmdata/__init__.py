"""mmdata: raw multimodal corpora -> sharded, versioned WebDatasets -> samplers, augmenters, methods.

The public reading entry is :func:`mmdata.load`.
"""
from __future__ import annotations

__version__ = "0.1.0"

from mmdata.errors import (  # noqa: E402 - the version first, then what users catch
    BadInputError, CodecError, ConfigError, DiskFullError, FileError, Interrupted, LedgerError, LockError,
    MmdataError, OutputError, RemoteTraceback, SampleError, ShardIntegrityError, UnsafeInputError,
)


def load(*args, **kwargs):
    """Open shards for reading; see :func:`mmdata.shards.read.load` (imported lazily: torch is heavy)."""
    from mmdata.shards.read import load as _load

    return _load(*args, **kwargs)


__all__ = ["__version__", "load", "BadInputError", "CodecError", "ConfigError", "DiskFullError", "FileError",
           "Interrupted", "LedgerError", "LockError", "MmdataError", "OutputError", "RemoteTraceback", "SampleError",
           "ShardIntegrityError", "UnsafeInputError"]
