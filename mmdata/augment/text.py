"""Text kernels on ``str`` fields: word dropout and word swap (words are whitespace-separated tokens).

A kernel that changes nothing returns the input string itself (strings are immutable); one that changes
something joins the words with single spaces.
"""
from __future__ import annotations

import numpy as np

from mmdata.augment.base import Op

MAX_DROP = 0.2  # probability of dropping each word at strength 1
MAX_SWAP = 0.2  # probability of swapping each word with its right neighbour at strength 1


def _words(value: str, params: int, what: str) -> list[str]:
    if not isinstance(value, str):
        raise TypeError(f"text kernels take str, got {type(value).__name__}")
    words = value.split()
    if params != len(words):
        raise ValueError(f"{what} has {params} entries for {len(words)} words")
    return words


def dropout_text(value: str, *, drop: tuple[bool, ...]) -> str:
    """Remove the words whose ``drop`` flag is set (one flag per word)."""
    words = _words(value, len(drop), "drop")
    if not any(drop):
        return value
    return " ".join(word for word, gone in zip(words, drop) if not gone)


def swap_text(value: str, *, order: tuple[int, ...]) -> str:
    """Reorder the words: word ``i`` of the output is word ``order[i]`` of the input."""
    words = _words(value, len(order), "order")
    if tuple(order) == tuple(range(len(words))):
        return value
    if sorted(order) != list(range(len(words))):
        raise ValueError(f"order {order} is not a permutation of {len(words)} words")
    return " ".join(words[i] for i in order)


def draw_dropout(rng: np.random.Generator, strength: float, value: str, ctx: dict) -> dict:
    """Drop each word with probability ``strength * MAX_DROP``; never every word."""
    n = len(value.split())
    drop = rng.random(n) < strength * MAX_DROP
    if n and drop.all():
        drop[int(rng.integers(n))] = False  # an empty text would be a different kind of input
    return {"drop": tuple(bool(d) for d in drop)}


def draw_swap(rng: np.random.Generator, strength: float, value: str, ctx: dict) -> dict:
    """Walk left to right, swapping each word with its right neighbour with probability ``strength * MAX_SWAP``."""
    n = len(value.split())
    order = list(range(n))
    for i in np.flatnonzero(rng.random(max(n - 1, 0)) < strength * MAX_SWAP):
        order[i], order[i + 1] = order[i + 1], order[i]
    return {"order": tuple(order)}


OPS: dict[str, Op] = {
    "dropout_text": Op(dropout_text, draw_dropout, changes_length=True),  # fewer words for later draws
    "swap_text": Op(swap_text, draw_swap),
}
