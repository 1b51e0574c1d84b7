"""Corpus readers: one module per corpus, registered here by name (== params key == CLI argument)."""
from __future__ import annotations

from mmdata.corpora import avmnist, mosi
from mmdata.corpora import crema_d, mosei
from mmdata.corpora import hateful_memes, mmimdb, snli_ve
from mmdata.corpora import nyuv2, stocks
from mmdata.corpora import sunrgbd
from mmdata.corpora.base import Corpus, Skip
from mmdata.errors import ConfigError

CORPORA: dict[str, Corpus] = {
    "avmnist": avmnist.CORPUS,
    "mosi": mosi.CORPUS,
    "mosei": mosei.CORPUS,
    "crema_d": crema_d.CORPUS,
    "mmimdb": mmimdb.CORPUS,
    "hateful_memes": hateful_memes.CORPUS,
    "snli_ve": snli_ve.CORPUS,
    "nyuv2": nyuv2.CORPUS,
    "stocks": stocks.CORPUS,
    "sunrgbd": sunrgbd.CORPUS,
}


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``, or ConfigError listing the known ones."""
    try:
        return CORPORA[name]
    except KeyError:
        raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}") from None


__all__ = ["CORPORA", "Corpus", "Skip", "get_corpus"]
