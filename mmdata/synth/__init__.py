"""Synthetic mini corpora written in each corpus's real on-disk layout, with learnable signal.

Each module exposes ``generate(out, *, seed=0, **sizes) -> Path``: it writes the raw layout under ``out``
and returns the root to hand to the corpus reader.
"""
from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable
from pathlib import Path

from mmdata.synth import avmnist, mosi
from mmdata.synth import crema_d, mosei
from mmdata.synth import hateful_memes, mmimdb, snli_ve
from mmdata.synth import nyuv2, stocks
from mmdata.synth import sunrgbd

SYNTHS: dict[str, Callable[..., Path]] = {
    "avmnist": avmnist.generate,
    "mosi": mosi.generate,
    "mosei": mosei.generate,
    "crema_d": crema_d.generate,
    "mmimdb": mmimdb.generate,
    "hateful_memes": hateful_memes.generate,
    "snli_ve": snli_ve.generate,
    "nyuv2": nyuv2.generate,
    "stocks": stocks.generate,
    "sunrgbd": sunrgbd.generate,
}


def write_synth(name: str, out: str | Path, **params: object) -> Path:
    """Write synthetic corpus ``name`` into ``out`` atomically; return the root to hand to its reader.

    The corpus is generated into ``<out>.tmp-<pid>`` and renamed into place when complete. ``out`` must be absent
    or empty: a synthetic corpus never replaces a folder (it may hold a real download), so a re-run asks the
    user to remove the old one (DVC removes stage outputs itself before running ``synth``).

    Raises:
        ConfigError: a keyword the generator does not take (a renamed one named with its new name).
        OutputError: ``out`` exists and is not an empty folder.
    """
    from mmdata.errors import OutputError, check_names
    from mmdata.shards.publish import interruptible, temp_path

    keywords = inspect.signature(SYNTHS[name]).parameters.values()
    check_names(params, {p.name for p in keywords if p.kind == p.KEYWORD_ONLY}, "synth option(s)",
                f"for corpus {name!r}", f" (fix corpora.{name}.synth in params.yaml)")
    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise OutputError(f"{out}: exists and is not empty; a synthetic corpus is written only into a new or empty "
                          f"folder. Remove it yourself (if it is an earlier synthetic corpus) or choose another --out")
    tmp = temp_path(out)
    with interruptible():
        try:
            root = SYNTHS[name](tmp, **params)
            if out.exists():
                out.rmdir()  # empty, checked above
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out / Path(root).relative_to(tmp)
