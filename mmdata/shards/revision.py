"""``mmdata diff PATH --rev OLD [--rev NEW]``: one DVC-tracked shard output compared across git revisions.

A revision's side is read through DVC (``dvc.api.DVCFileSystem(repo, rev=...)``): git gives the ``dvc.lock`` /
``.dvc`` file of that commit, and the files it names come from the DVC cache or, when the cache lacks them, from
the default remote. Only each split's ``manifest.json`` and ``index.parquet`` are copied, into a temporary
folder removed afterwards; the shard tars are fetched only for ``exact`` (their payload bytes are compared). The
user's workspace, git index and HEAD are never touched, so this works with uncommitted changes checked out. NEW
defaults to the workspace: the folder as it is on disk now (opened as :func:`mmdata.shards.diff.diff` opens it).

A side read without its tars is checked as far as its own files allow: the index rows reconcile with the
manifest's row count and name only listed shards (``SplitShards.open`` also checks each tar's size; ``mmdata
verify`` re-hashes).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmdata.errors import ConfigError, ShardIntegrityError
from mmdata.shards.diff import diff_sides, open_side
from mmdata.shards.index import read_index
from mmdata.shards.manifest import INDEX, MANIFEST, read_manifest
from mmdata.shards.split import DEFAULT_SHARDS_ROOT, SplitShards

WORKSPACE = "workspace"


def repo_root(repo: str | Path | None = None) -> Path:
    """The root of the git + DVC repository holding ``repo`` (default: the current folder).

    Raises:
        ConfigError: no DVC repository there (the folder is named).
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    start = Path(repo or ".").resolve()
    try:
        return Path(Repo.find_root(str(start)))
    except NotDvcRepoError as exc:
        raise ConfigError(f"{start}: not inside a DVC repository ({exc}); run `git init && dvc init` there, or "
                          f"pass --repo") from exc


def repo_path(path: str | Path, start: Path, root: Path) -> str:
    """``path`` (relative to ``start``) as a posix path relative to ``root``; a bare corpus name that is no
    folder there is ``<root>/data/shards/<name>`` (as ``mmdata.load`` resolves it).

    Raises:
        ConfigError: ``path`` lies outside the repository.
    """
    text = str(path)
    full = start / text
    if os.sep not in text and "/" not in text and not full.exists():
        full = root / DEFAULT_SHARDS_ROOT / text
    relative = Path(os.path.relpath(full.resolve(), root))
    if relative.parts[:1] == ("..",):
        raise ConfigError(f"{path}: outside the repository {root}; name a shard folder tracked in it")
    return relative.as_posix()


@contextmanager
def _fetching(where: str, what: str) -> Iterator[None]:
    """Turn DVC's "not in the cache, on no remote" failures while reading ``what`` into one error naming it."""
    from dvc_data.index.index import DataIndexError

    try:
        yield
    except (FileNotFoundError, DataIndexError) as exc:
        raise ShardIntegrityError(
            f"{where}: {what} is neither in the DVC cache nor on a remote DVC can reach ({exc}); `dvc push` it "
            f"from a clone that has it, or add the remote that holds it (`dvc remote add -d NAME URL`)") from exc


def _split_names(fs: Any, path: str, where: str) -> list[str]:
    """Repo paths of the splits of ``path`` at one revision (itself when it is a split), sorted."""
    with _fetching(where, f"the listing of {path}"):
        if fs.isfile(f"{path}/{MANIFEST}"):
            return [path]
        if not fs.isdir(path):
            raise ShardIntegrityError(f"{where}: no such folder in that revision (was the shard output committed "
                                      f"there, under this path?)")
        found = sorted(p.lstrip("/") for p in fs.ls(path, detail=False) if fs.isfile(f"{p}/{MANIFEST}"))
    if not found:
        raise ShardIntegrityError(f"{where}: no split with a {MANIFEST} (not a shard directory, or unfinished)")
    return found


def _copy(fs: Any, source: str, dest: Path, where: str) -> None:
    """Copy one tracked file of the revision to ``dest`` (from the DVC cache or the default remote)."""
    with _fetching(where, source):
        fs.get_file(source, str(dest))


def _open_index_only(directory: Path) -> SplitShards:
    """A split from its manifest and index alone (no tars): the index rows reconciled with the manifest.

    Raises:
        ShardIntegrityError: the index's row count or shard names disagree with the manifest.
    """
    def no_tar_to_check(record: dict[str, Any], rows: int) -> None:
        """The tars stay in the cache or on the remote; their sizes and hashes are ``--exact``'s and verify's."""

    return SplitShards.checked(directory, read_manifest(directory), read_index(directory / INDEX), no_tar_to_check)


def _fetch_split(fs: Any, split: str, dest: Path, payloads: bool, where: str) -> SplitShards:
    """Copy one split's manifest and index (and its tars when ``payloads``) to ``dest`` and open it there."""
    dest.mkdir(parents=True)
    for name in (MANIFEST, INDEX):
        _copy(fs, f"{split}/{name}", dest / name, where)
    if not payloads:
        return _open_index_only(dest)
    for record in read_manifest(dest)["shards"]:
        _copy(fs, f"{split}/{record['name']}", dest / record["name"], where)
    return SplitShards.open(dest)


def revision_side(root: Path, rev: str, path: str, dest: Path, payloads: bool = False
                  ) -> tuple[dict[str, SplitShards], str]:
    """Open shard output ``path`` as committed at git revision ``rev``, its files copied under ``dest``.

    Returns:
        (split name -> opened split, the full commit id ``rev`` names).

    Raises:
        ConfigError: git does not know ``rev``.
        ShardIntegrityError: ``path`` holds no finished split at ``rev``, or a file it needs cannot be fetched.
    """
    from dvc.api import DVCFileSystem
    from dvc.scm import SCMError

    fs = DVCFileSystem(str(root), rev=rev)
    try:
        try:
            commit = fs.repo.scm.resolve_rev(rev)
        except SCMError as exc:
            raise ConfigError(f"{root}: unknown git revision {rev!r} ({exc})") from exc
        where = f"{path} at {rev} ({commit[:10]}) in {root}"
        splits = {}
        for number, split in enumerate(_split_names(fs, path, where)):
            opened = _fetch_split(fs, split, dest / str(number), payloads, where)
            splits[opened.manifest["split"]] = opened
        return splits, commit
    finally:
        fs.close()  # the repo DVC opened for the revision (git objects, index databases)


def diff_revisions(path: str | Path, old_rev: str, new_rev: str | None = None, repo: str | Path | None = None,
                   exact: bool = False) -> dict[str, Any]:
    """Compare shard output ``path`` at git revision ``old_rev`` with ``new_rev`` (None: the workspace).

    Args:
        path: the DVC-tracked corpus shard folder (or one split folder, or a corpus name: ``data/shards/<name>``),
            relative to ``repo``.
        old_rev, new_rev: git revisions (``HEAD~1``, a tag, a branch, a commit id).
        repo: a folder inside the git + DVC repository (default: the current folder).
        exact: also compare payload bytes (fetches the revisions' shard tars; see :func:`mmdata.shards.diff.diff`).

    Returns:
        :func:`mmdata.shards.diff.diff_sides`'s dict plus ``revisions``: ``{"path": repo path, "old": {"rev",
        "commit"}, "new": {"rev", "commit"}}`` (``rev`` ``workspace`` and ``commit`` None for the workspace).
    """
    start = Path(repo or ".").resolve()
    root = repo_root(start)
    inside = repo_path(path, start, root)
    with tempfile.TemporaryDirectory(prefix="mmdata-diff-") as scratch:
        old, old_commit = revision_side(root, old_rev, inside, Path(scratch) / "old", exact)
        if new_rev is None:
            new, new_commit = open_side(root / inside, "NEW (the workspace)"), None
        else:
            new, new_commit = revision_side(root, new_rev, inside, Path(scratch) / "new", exact)
        result = diff_sides(old, new, exact)  # inside the with: exact reads payloads from the scratch copies
    result["revisions"] = {"path": inside, "old": {"rev": old_rev, "commit": old_commit},
                           "new": {"rev": new_rev or WORKSPACE, "commit": new_commit}}
    return result
