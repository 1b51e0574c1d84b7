"""End to end with the real DVC CLI: repro, up-to-date second run, `exp run -S`, `params diff`, `metrics diff`.

Runs in a copy of the repository (tracked and unignored files) with two tiny corpora and one epoch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        # Outputs of stages run by hand in the working tree are not part of the repository.
        if (REPO / name).is_file() and not name.startswith(("data/", "results/")):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)


def _shrink_params(path: Path) -> None:
    """Two corpora of different kinds at tiny sizes: the DVC mechanics, not every corpus (`make repro` runs all)."""
    params = yaml.safe_load(path.read_text())
    keep = ("avmnist", "mosi")
    params["corpora"] = {name: params["corpora"][name] for name in keep}
    params["experiments"] = {name: params["experiments"][name] for name in keep}
    params["corpora"]["avmnist"].update(synth={"seed": 0, "train": 120, "test": 40},
                                        shard={"max_samples": 40, "max_bytes": 1 << 26, "max_skip_fraction": 0.05})
    params["corpora"]["mosi"].update(synth={"seed": 0, "train": 36, "valid": 12, "test": 24},
                                     shard={"max_samples": 12, "max_bytes": 1 << 26, "max_skip_fraction": 0.05})
    params["train"].update(epochs=1, batch_size=16, seeds=2)
    params["evaluate"] = {"levels": [0.0, 0.5, 1.0]}
    params["fidelity"] = {"refnet_adjacency": {"m": 8, "d": 16, "ranks": [2, 4, 7], "seeds": 2, "adam_steps": 30}}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_exp_run_and_diffs(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    _shrink_params(repo / "params.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        _run(cmd, repo)
    _run(["dvc", "repro"], repo)
    experiments = yaml.safe_load((repo / "params.yaml").read_text())["experiments"]
    for corpus, runs in experiments.items():  # every quick run trained twice and scored, one file per corpus
        quick = {run for run, block in runs.items() if block.get("suite", "quick") == "quick"}
        seeds = {run: range(runs[run].get("train", {}).get("seeds", 2)) for run in quick}  # 2 unless overridden
        metrics = json.loads((repo / f"results/metrics/{corpus}.json").read_text())
        assert set(metrics) == quick and all(m["seeds"] == len(seeds[run]) for run, m in metrics.items())
        history = json.loads((repo / f"results/history/{corpus}.json").read_text())
        assert set(history) == quick and all(set(h) == set(map(str, seeds[run])) for run, h in history.items())
        assert all("seconds" not in h for runs_ in history.values() for h in runs_.values())  # deterministic
        assert all((repo / f"results/models/{corpus}/{run}/seed{s}.pt").is_file() for run in quick for s in seeds[run])
        assert {p.stem for p in (repo / f"results/curves/{corpus}").glob("*.csv")} == quick
    report = (repo / "results/report.md").read_text()
    assert "| lf_profusion | profusion |" in report and "ProFusion Table 8" in report
    assert "| refnet_adjacency |" in report  # the fidelity stage ran and the report shows it
    plots = _run(["dvc", "plots", "show", "--json"], repo)
    assert "results/curves/mosi/lf.csv" in plots
    assert "Data and pipelines are up to date" in _run(["dvc", "repro"], repo)
    (repo / "methods" / "__pycache__").mkdir(exist_ok=True)  # bytecode beside a code dep changes nothing
    (repo / "methods" / "__pycache__" / "loop.cpython-312.pyc").write_bytes(b"\0" * 16)
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)
    _run(["dvc", "exp", "run", "-S", "train.epochs=3"], repo)
    params_diff = json.loads(_run(["dvc", "params", "diff", "--json"], repo))
    epochs = params_diff["params.yaml"]["train.epochs"]
    assert (epochs["old"], epochs["new"]) == (1, 3)
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], repo))["results/metrics/mosi.json"]
    changed = [k for k, v in diff.items() if v.get("diff")]
    assert any(k.startswith("lf.") for k in changed), diff
    # One run's key re-runs only its corpus's train and evaluate stages (and the report).
    log = _run(["dvc", "exp", "run", "-S", "+experiments.avmnist.fused.train.lr=0.01"], repo)  # +: a new key
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert ran == {"train@avmnist", "evaluate@avmnist", "report"}, log
    # A run's negatives and augmentation are its own params: setting them re-runs that corpus only.
    for key in ("+experiments.mosi.lf.augment.strength=0.2",
                "+experiments.mosi.lf.samplers.marginal_permute.num_negatives=2"):
        ran = set(re.findall(r"Running stage '([^']+)'", _run(["dvc", "exp", "run", "-S", key], repo)))
        assert ran == {"train@mosi", "evaluate@mosi", "report"}, key
    # The documented full-table command trains every configured run.
    _run(["dvc", "exp", "run", "-S", "suite=full"], repo)
    for corpus, runs in experiments.items():
        assert set(json.loads((repo / f"results/metrics/{corpus}.json").read_text())) == set(runs)
