"""The only source of randomness in the library: ``make_rng(seed, *salts)``.

Salts (epoch, rank, a sample key, a purpose string) are mixed into a numpy SeedSequence through a stable
hash, never Python's ``hash()`` (randomised per process, webdataset#190), so the same seed and salts give
the same stream in every process, worker and run.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _salt_words(salt: object) -> list[int]:
    """32-bit words for one salt: ints directly, anything else through blake2b of its str()."""
    if isinstance(salt, (int, np.integer)) and not isinstance(salt, bool):
        value = int(salt)
        if value < 0:
            raise ValueError(f"integer salts must be >= 0, got {value}")
        return [value & 0xFFFFFFFF, value >> 32] if value >> 32 else [value]
    digest = hashlib.blake2b(str(salt).encode("utf-8"), digest_size=8).digest()
    return [int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")]


def seed_sequence(seed: int, *salts: object) -> np.random.SeedSequence:
    """A SeedSequence from a base seed and salts; distinct salt tuples give independent streams."""
    words = _salt_words(seed)
    for salt in salts:
        # A length word before each salt keeps ("ab",) and ("a", "b") apart.
        parts = _salt_words(salt)
        words += [len(parts), *parts]
    return np.random.SeedSequence(words)


def make_rng(seed: int, *salts: object) -> np.random.Generator:
    """A numpy Generator seeded from ``seed`` and any number of salts (ints or strings).

    Example:
        >>> make_rng(0, "shuffle", 3).integers(10)  # same value in every process
    """
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *salts)))


def torch_seed(seed: int, *salts: object) -> int:
    """A 63-bit integer seed for ``torch.Generator().manual_seed`` derived like :func:`make_rng`."""
    return int(seed_sequence(seed, *salts).generate_state(2, np.uint64)[0] >> np.uint64(1))
