"""Shard a whole corpus: every split written atomically into ``<out>/<split>``, the corpus directory last."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmdata.corpora import get_corpus
from mmdata.corpora.base import Corpus, require_root
from mmdata.shards.manifest import sha256_file
from mmdata.shards.write import remove_stale, replace_dir, write_split


def fingerprint(corpus: Corpus, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Which release was read and the size and sha256 of every raw file (paths relative to root)."""
    files = []
    for path in sorted(corpus.sources(root, **options)):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        files.append({"path": rel.as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return {"release": corpus.describe(root, **options), "root": str(root), "files": files}


def shard_corpus(name: str, root: str | Path, out: str | Path, *, reader: dict[str, Any] | None = None,
                 max_samples: int = 1000, max_bytes: int = 256 << 20, max_skip_fraction: float = 0.05,
                 progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Read corpus ``name`` from ``root`` and write ``out/<split>/`` shards for every split.

    Args:
        name: registered corpus name.
        root: the raw corpus (real download or synthetic mini).
        out: the corpus shard directory (``data/shards/<name>``); replaced only when every split is done.
        reader: reader options (``corpora.<name>.reader`` in params.yaml).
        max_samples, max_bytes, max_skip_fraction: see :func:`mmdata.shards.write.write_split`.
        progress: show a progress bar (None: only on a terminal).

    Returns:
        split -> manifest.
    """
    corpus, options = get_corpus(name), dict(reader or {})
    corpus.check_options(options)
    root, out = require_root(root, name), Path(out)
    remove_stale(out)
    source = fingerprint(corpus, root, options)
    features = corpus.features(root, **options)
    params = {"reader": options, "max_samples": max_samples, "max_bytes": max_bytes,
              "max_skip_fraction": max_skip_fraction}
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    manifests = {}
    try:
        for split in corpus.splits:
            items = tqdm(corpus.iter_samples(root, split, **options), desc=f"{name}/{split}", unit="sample",
                         disable=None if progress is None else not progress)
            manifests[split] = write_split(items, features, tmp / split, corpus=name, split=split,
                                           max_samples=max_samples, max_bytes=max_bytes,
                                           max_skip_fraction=max_skip_fraction, params=params, source=source,
                                           view=corpus.view_for(root, **options))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifests
