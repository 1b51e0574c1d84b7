"""Corpus readers: one module per corpus, registered here by name (== params key == CLI argument)."""
from __future__ import annotations

from mmdata.corpora import avmnist, mosi
from mmdata.corpora.base import ConfigError, Corpus, Skip

CORPORA: dict[str, Corpus] = {
    "avmnist": avmnist.CORPUS,
    "mosi": mosi.CORPUS,
}


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``, or ConfigError listing the known ones."""
    try:
        return CORPORA[name]
    except KeyError:
        raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}") from None


__all__ = ["CORPORA", "ConfigError", "Corpus", "Skip", "get_corpus"]
