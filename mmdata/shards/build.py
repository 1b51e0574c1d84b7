"""Shard a whole corpus: every split written atomically into ``<out>/<split>``, the corpus directory last.

The output is checked before anything is written (:func:`mmdata.shards.publish.check_output`: only an earlier
mmdata output of the same corpus, or an empty folder, is ever replaced), and the whole run holds the output's lock.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from collections.abc import Iterable
from contextlib import nullcontext
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmdata.corpora import get_corpus
from mmdata.corpora.base import Corpus, Skip, require_root
from mmdata.errors import ConfigError
from mmdata.shards.localtasks import LocalSplit
from mmdata.shards.manifest import sha256_file
from mmdata.shards.orphans import end_with_parent
from mmdata.shards.parted import SplitSource
from mmdata.shards.publish import (check_output, disk_full_names, interruptible, output_lock, remove_stale,
                                   replace_dir, temp_path)
from mmdata.shards.reconcile import check_source_count
from mmdata.shards.record import RECORD, write_corpus_record
from mmdata.shards.write import Writer, write_split
from mmdata.types import Sample

ENGINES = ("local", "ray")


def fingerprint(corpus: Corpus, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Which release was read and the size and sha256 of every raw file (paths relative to root)."""
    return {**_release(corpus, root, options), "files": _files(corpus, root, options)}


def _release(corpus: Corpus, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    return {"release": corpus.describe(root, **options), "root": str(root)}


def _files(corpus: Corpus, root: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    files = []
    for path in sorted(corpus.sources(root, **options)):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        files.append({"path": rel.as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return files


class _FilesMeanwhile:
    """The fingerprint's files hashed by a forked process while the splits are written (with several writer
    processes the driver otherwise hashes every raw file alone before any split starts: 10% of an AV-MNIST run,
    a quarter of an MM-IMDb one). Calling it returns them; if that process failed or died, they are hashed here,
    so an unreadable raw file raises its own error, as without it."""

    def __init__(self, corpus: Corpus, root: Path, options: dict[str, Any]) -> None:
        self.args, self.files = (corpus, root, options), None
        context = multiprocessing.get_context("fork")  # forked before any writer process or thread exists
        self.conn, theirs = context.Pipe(duplex=False)
        self.process = context.Process(target=self._hash, args=(theirs, self.args, os.getpid(), self.conn),
                                       daemon=True)
        self.process.start()
        theirs.close()

    @staticmethod
    def _hash(conn: Connection, args: tuple, parent: int, parent_end: Connection) -> None:
        end_with_parent(parent, [parent_end])
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver, in the same process group, gets Ctrl-C
        try:
            conn.send(_files(*args))
        except Exception:  # noqa: BLE001 - the driver hashes again and raises the error itself
            conn.send(None)

    def __call__(self) -> list[dict[str, Any]]:
        if self.files is None:
            try:
                self.files = self.conn.recv()
            except (EOFError, OSError):  # the process died
                pass
            self.close()
            if self.files is None:
                self.files = _files(*self.args)
        return self.files

    def close(self) -> None:
        """Stop the process if it still runs (a failed run) and reap it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def shard_corpus(name: str, root: str | Path, out: str | Path, *, reader: dict[str, Any] | None = None,
                 max_samples: int = 1000, max_bytes: int = 256 << 20, max_skip_fraction: float = 0.05,
                 progress: bool | None = None, wait: bool = False, processes: int | None = None,
                 engine: str = "local", address: str | None = None) -> dict[str, dict[str, Any]]:
    """Read corpus ``name`` from ``root`` and write ``out/<split>/`` shards for every split.

    Args:
        name: registered corpus name.
        root: the raw corpus (real download or synthetic mini).
        out: the corpus shard directory (``data/shards/<name>``); replaced only when every split is done, and
            only when it is empty or an earlier mmdata output of this corpus; it must not contain ``root``.
        reader: reader options (``corpora.<name>.reader`` in params.yaml).
        max_samples, max_bytes, max_skip_fraction: see :func:`mmdata.shards.write.write_split`.
        progress: show a progress bar (None: only on a terminal).
        wait: when another run holds the output's lock, wait for it instead of failing.
        processes: processes writing shards (None: 1). Several, on a corpus tasks can read in parts, each
            reads, checks and encodes its own parts (:mod:`mmdata.shards.localtasks`); else the driver reads
            and the processes check, encode and write (:mod:`mmdata.shards.engine`). With ``engine`` "ray", the
            CPUs of the local Ray instance started here (None: all). Not a param of the output, whose bytes are
            the same for any number.
        engine: "local" (this machine's processes) or "ray" (tasks on Ray: :mod:`mmdata.shards.ray_engine`,
            the Ray session of this process if one is initialised, else one started here and shut down at the
            end); not a param of the output, whose bytes are the same for both.
        address: with ``engine`` "ray", the cluster to connect to (``ray.init(address=...)``); raw files are
            read and shards written by the cluster's workers, so the raw root and the output must be on storage
            they share with this machine, at the same paths.

    Returns:
        split -> manifest.

    Raises:
        OutputError, LockError, DiskFullError, Interrupted: see :mod:`mmdata.shards.publish`.
        BadInputError: a split had no sample written or too many skipped.
    """
    corpus, options = get_corpus(name), dict(reader or {})
    corpus.check_options(options)
    if engine not in ENGINES:
        raise ConfigError(f"unknown shard engine {engine!r}; valid: {', '.join(ENGINES)} (fix --engine, or "
                          f"corpora.{name}.shard.engine in params.yaml)")
    root, out = require_root(root, name), Path(out)
    check_output(out, name, splits=corpus.splits, raw_root=root)  # fail before creating anything
    with interruptible(), output_lock(out, wait=wait):
        check_output(out, name, splits=corpus.splits, raw_root=root)  # again: another run may have finished
        remove_stale(out, corpus.splits)
        with _session(engine, address, processes) as ray:
            return _shard_into(corpus, root, out, options, max_samples=max_samples, max_bytes=max_bytes,
                               max_skip_fraction=max_skip_fraction, progress=progress, processes=processes or 1,
                               ray=ray)


def _session(engine: str, address: str | None, processes: int | None) -> Any:
    """A context giving the Ray module for the ray engine (a session connected for the run), None for local."""
    if engine == "local":
        return nullcontext(None)
    from mmdata.shards.ray_engine import ray_session  # Ray is an optional extra: imported only when asked for

    return ray_session(address, processes)


def _split_items(corpus: Corpus, root: Path, split: str, options: dict[str, Any], max_samples: int, ray: Any,
                 processes: int) -> tuple[Iterable[Sample | Skip], Writer | None]:
    """The split's raw items and the writing engine: on Ray, Ray's two phases of tasks; locally with several
    processes and a source tasks can read in parts, the same two phases on this machine's processes
    (:mod:`mmdata.shards.localtasks`); else the reader's stream and the local engine."""
    if ray is not None:
        from mmdata.shards.ray_engine import RaySplit

        run = RaySplit(ray, SplitSource(corpus, root, split, options), part_size=max_samples)
        return run.items(), run.write
    source = SplitSource(corpus, root, split, options)
    if processes > 1 and source.parts_count() is not None:
        local = LocalSplit(processes, source, part_size=max_samples)
        return local.items(), local.write
    return corpus.iter_samples(root, split, **options), None


def _shard_into(corpus: Corpus, root: Path, out: Path, options: dict[str, Any], *, max_samples: int,
                max_bytes: int, max_skip_fraction: float, progress: bool | None, processes: int, ray: Any
                ) -> dict[str, dict[str, Any]]:
    """Write every split into ``<out>.tmp-<pid>`` and publish it as ``out`` (the caller holds the lock)."""
    name = corpus.name
    params = {"reader": options, "max_samples": max_samples, "max_bytes": max_bytes,
              "max_skip_fraction": max_skip_fraction}
    tmp = temp_path(out)
    manifests = {}
    files = None
    try:  # the hashing process too: an error before the first split still reaps it
        # With several local processes the raw files are hashed meanwhile (Ray's driver holds threads: no fork).
        files = _FilesMeanwhile(corpus, root, options) if processes > 1 and ray is None else None
        source = _release(corpus, root, options) if files is not None else fingerprint(corpus, root, options)
        features = corpus.features(root, **options)
        for split in corpus.splits:
            items, writer = _split_items(corpus, root, split, options, max_samples, ray, processes)
            items = tqdm(items, desc=f"{name}/{split}", unit="sample",
                         disable=None if progress is None else not progress)
            count = corpus.count_raw(root, split, **options) if corpus.count_raw else None
            manifests[split] = write_split(items, features, tmp / split, corpus=name, split=split,
                                           max_samples=max_samples, max_bytes=max_bytes,
                                           max_skip_fraction=max_skip_fraction, params=params, source=source,
                                           view=corpus.view_for(root, **options),
                                           ignored=count.ignored if count else 0, processes=processes,
                                           writer=writer, source_files=files)
            if count is not None:  # the reader and the release's own enumeration must agree, or nothing publishes
                check_source_count(count, manifests[split], root, f"{name}/{split}")
        with disk_full_names(lambda: tmp / RECORD):
            write_corpus_record(tmp, name, list(corpus.splits))  # last: its presence marks a finished output
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if files is not None:
            files.close()
    return manifests
