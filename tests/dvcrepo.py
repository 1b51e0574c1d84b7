"""A throwaway git + DVC repository whose pipeline shards a small synthetic AV-MNIST, for the version tests.

The real DVC and git command lines run in subprocesses (each with a timeout, so a test can never hang), with
analytics off (``DVC_NO_ANALYTICS=1`` and ``core.analytics false``) and DVC's site cache inside the repository's
temporary folder. The pipeline mirrors the project's synth and shard stages at a fraction of the size: ``synth``
writes ``data/raw/avmnist`` from ``params.yaml``'s ``synth`` block, ``shard`` runs ``mmdata shard`` into
``data/shards/avmnist`` with ``shard.max_samples`` per shard.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

SHARDS = "data/shards/avmnist"
TIMEOUT = 120  # seconds for one git / dvc command; each takes a few seconds here
_SYNTH = ("from mmdata.synth import write_synth; "
          "write_synth('avmnist', 'data/raw/avmnist', seed=0, train=${synth.train}, test=${synth.test})")
PIPELINE = {"stages": {
    "synth": {"cmd": f'python -c "{_SYNTH}"', "params": ["synth"], "outs": ["data/raw/avmnist"]},
    "shard": {"cmd": f"python -m mmdata.cli shard avmnist --root data/raw/avmnist --out {SHARDS} "
                     "--max-samples ${shard.max_samples}",
              "deps": ["data/raw/avmnist"], "params": ["shard"], "outs": [SHARDS]}}}


def env() -> dict[str, str]:
    """The current environment with this interpreter's bin first (``python`` in the stages is this venv's)."""
    return dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}", GIT_CONFIG_NOSYSTEM="1")


def run(repo: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git ...``, ``dvc ...`` or ``mmdata ...`` in ``repo`` (dvc and mmdata through this interpreter).

    Raises:
        AssertionError: ``check`` and a non-zero exit (stdout and stderr quoted).
    """
    command = [sys.executable, "-m", "mmdata.cli" if argv[0] == "mmdata" else "dvc", *argv[1:]] \
        if argv[0] in ("dvc", "mmdata") else list(argv)
    done = subprocess.run(command, cwd=repo, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def init(repo: Path) -> Path:
    """``git init`` + ``dvc init`` in a new folder ``repo``, with the pipeline written (not yet run)."""
    repo.mkdir(parents=True)
    run(repo, "git", "init", "-q", "-b", "main")
    for key, value in (("user.name", "mmdata tests"), ("user.email", "tests@mmdata.invalid"),
                       ("commit.gpgsign", "false")):
        run(repo, "git", "config", key, value)
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    run(repo, "dvc", "config", "core.site_cache_dir", str(repo.parent / f"{repo.name}-site-cache"))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    return repo


def version(repo: Path, message: str, train: int = 48, max_samples: int = 20) -> dict[str, bytes]:
    """Set the params, ``dvc repro``, commit everything as ``message``; the shard files' bytes by path."""
    params = {"synth": {"train": train, "test": 24}, "shard": {"max_samples": max_samples}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(repo, "dvc", "repro", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", message)
    return tree_bytes(repo / SHARDS)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative posix path -> bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
