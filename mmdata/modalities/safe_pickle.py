"""A restricted unpickler for the data pickles mmdata reads (the MMSA, MulT and MultiBench affect releases).

``pickle.load`` calls whatever importable callable a file names, so a crafted ``.pkl`` runs code the moment it is
loaded. Those releases only ever hold dicts of numpy arrays, strings, bytes and numbers, so :class:`SafeUnpickler`
resolves only the globals in :data:`ALLOWED` and refuses any other one with :class:`~mmdata.errors.UnsafeInputError`
when the file first names it, i.e. before any callable from that file runs.

Layer: imports numpy and :mod:`mmdata.errors` only, so any module may use it.
"""
from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from mmdata.errors import UnsafeInputError

#: The ``(module, name)`` globals a pickle of numpy arrays, str, bytes, numbers and plain containers refers to.
#: numpy writes ``numpy.core`` (1.x) or ``numpy._core`` (2.x); both spellings are accepted and mapped to the
#: installed numpy, so files written by either version load.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    # ndarray.__reduce__ (protocols 0-4), numpy scalars and dtypes
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    # ndarray under protocol 5
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    # Python 3 writes bytes as _codecs.encode(text, "latin1") under protocols 0-2
    ("_codecs", "encode"),
    # plain value types that have no opcode of their own in some protocols; none can run code
    ("builtins", "complex"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
})


def _numpy_core(submodule: str) -> ModuleType:
    """``numpy._core.<submodule>`` (numpy 2), or ``numpy.core.<submodule>`` on numpy 1.x.

    Importing the numpy 2 module directly avoids numpy's deprecation shim for ``numpy.core``.
    """
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 spelling of a global (``__builtin__.set`` -> ``builtins.set``), as ``pickle`` maps it."""
    # pickle's own find_class applies this mapping; an override must too, or protocol 0-2 files are refused.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _resolve(module: str, name: str) -> Any:
    """The object an allowed ``(module, name)`` stands for in the installed Python and numpy."""
    if module.startswith(("numpy.core.", "numpy._core.")):
        return getattr(_numpy_core(module.rsplit(".", 1)[1]), name)
    return getattr(importlib.import_module(module), name)


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only :data:`ALLOWED` globals.

    Args:
        file: a binary file object positioned at the pickle.
        source: what to call the input in error messages (its path).
    """

    def __init__(self, file: BinaryIO, *, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global ``module.name``.

        Raises:
            UnsafeInputError: any other global, raised as soon as the file names it, so it is never called.
        """
        module, name = _python3_name(module, name)
        if (module, name) not in ALLOWED:
            raise UnsafeInputError(
                f"{self.source}: refused to unpickle: it refers to {module}.{name}, which is not one of the data "
                f"types a dataset pickle holds (numpy arrays, dtypes, scalars, plain Python values); a file that "
                f"names it could run code. Use the release's original file, or convert it to .npy / HDF5")
        return _resolve(module, name)


def load(path: str | Path) -> Any:
    """The object pickled in ``path``, read with :class:`SafeUnpickler`.

    Raises:
        UnsafeInputError: the pickle refers to a global outside :data:`ALLOWED` (the message names the file
            and ``module.name``).
        pickle.UnpicklingError, EOFError, ValueError: a damaged or truncated pickle, as ``pickle.load``.
    """
    with open(path, "rb") as f:
        return SafeUnpickler(f, source=str(path)).load()


def loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Like :func:`load`, from bytes in memory; ``source`` names them in error messages."""
    return SafeUnpickler(io.BytesIO(data), source=source).load()
