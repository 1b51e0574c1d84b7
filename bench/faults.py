"""Fault figures of reliability.md section 8, measured on this machine (a benchmark: it prints, never asserts).

Builds tiny synthetic AV-MNIST minis under a temporary directory and measures, one function per figure:

- truncation: a shard cut at random offsets plus every member-header and end-of-archive block boundary; share
  caught by ``mmdata.load`` (named error, partial samples delivered) and by ``verify``; Python's ``tarfile``
  alone as the baseline;
- bit flips: single-bit flips at random offsets of a shard, by region (header, payload, padding, end); caught by
  ``verify`` (sha256), by the read path (header checksum, payload crc32), and by ``load(verify=True)``;
- kill -9: ``dvc repro`` of a scratch ``mmdata shard`` stage killed (whole process group) at a random time, then
  ``dvc repro`` again: byte-identical recovery, published-looking partial output before recovery;
- concurrent runs: two ``mmdata shard`` into one ``--out``: is the published output complete and verified;
- disk full: ``mmdata shard`` onto small tmpfs mounts (needs root): exit status, ENOSPC message, no output;
- DDP balance: batch-count spread, padding and drops per rank for both partitions, world sizes x workers;
- resources: open fds, RSS and child processes after 1 epoch and after many (workers > 0);
- summary: fault cases tried, share handled, samples unaccounted over every shard run.

    python bench/faults.py            # full run, about 2 minutes on 2 cores (the kill trials dominate)
    python bench/faults.py --quick    # about 30 s, small trial counts
    python bench/faults.py --kills 40 --flips 1000 --workdir /tmp/faults   # keep the files to inspect
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import mmdata  # noqa: E402
from mmdata.rng import make_rng  # noqa: E402
from mmdata.shards.verify import verify  # noqa: E402
from mmdata.synth import SYNTHS  # noqa: E402

#: Error classes mmdata users catch, by name (what a CLI error line or an exception must name to count).
NAMED = {name for name in mmdata.__all__ if name.endswith("Error")}
PAGE = 4096
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@dataclass
class Tally:
    """One figure's fault cases for the summary.

    ``handled``: ended in a named error, a verify finding, a correct recovery or unchanged delivered data;
    ``silent``: wrong data or a wrong published output with no error.
    """

    name: str
    tried: int = 0
    handled: int = 0
    silent: int = 0


@dataclass
class Ledger:
    """raw = written + skipped, summed over the manifests of every shard run."""

    runs: int = 0
    raw: int = 0
    written: int = 0
    skipped: int = 0

    def add(self, out: Path) -> None:
        """Count the splits of a published corpus output (no-op when nothing was published)."""
        manifests = sorted(out.glob("*/manifest.json"))
        self.runs += bool(manifests)
        for path in manifests:
            report = json.loads(path.read_text())["report"]
            self.raw += report["raw"]
            self.written += report["written"]
            self.skipped += report["skipped"]


LEDGER = Ledger()


# ---------------------------------------------------------------------------------------------------- helpers


def mmdata_cmd() -> list[str]:
    """The ``mmdata`` console script of this interpreter (``python -m mmdata.cli`` when not installed)."""
    script = Path(sys.executable).with_name("mmdata")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmdata.cli"]


def shard_cmd(root: Path, out: Path, max_samples: int) -> list[str]:
    """``mmdata shard avmnist`` of ``root`` into ``out``."""
    return [*mmdata_cmd(), "shard", "avmnist", "--root", str(root), "--out", str(out),
            "--max-samples", str(max_samples)]


def error_line(stderr: str) -> str:
    """The last non-empty line of a failed command's stderr (the CLI prints one line per error)."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def named_line(line: str) -> bool:
    """True when an error line names one of mmdata's error classes."""
    match = re.search(r"error: (\w+):", line)
    return bool(match) and match[1] in NAMED


def output_digests(out: Path) -> dict[str, str]:
    """relative path -> sha256 of every shard and index of a corpus output (what must be byte-identical)."""
    files = sorted(out.glob("*/*.tar")) + sorted(out.glob("*/index.parquet"))
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def leftovers(out: Path) -> list[str]:
    """Temporary, old or lock files a run left next to ``out`` or inside it."""
    near = list(out.parent.glob(f"{out.name}.*"))
    inside = [p for p in out.rglob("*") if re.search(r"\.(tmp|old)-\d+|\.partial$", p.name)] if out.exists() else []
    return sorted(p.name for p in near + inside)


def sample_digest(batch: dict) -> str:
    """sha256 over every field of a one-sample batch as the reader delivers it."""
    digest = hashlib.sha256()
    for name in sorted(batch):
        value = batch[name]
        digest.update(name.encode())
        digest.update(value.numpy().tobytes() if hasattr(value, "numpy") else repr(value).encode())
    return digest.hexdigest()


def read_split(split_dir: Path, **options) -> dict[str, str]:
    """key -> sample digest of a whole split read in order (raises what the reader raises)."""
    return {b["__key__"][0]: sample_digest(b)
            for b in mmdata.load(split_dir, shuffle=False, batch_size=1, **options)}


#: Which reader check fired, by a fragment of its message (first match wins).
CHECKS = (("bytes, manifest says", "size at open"), ("sha256", "sha256 at open"), ("header", "member header"),
          ("unparsable size or checksum", "member header"),
          ("payload checksum", "payload crc32"), ("ends early", "short read"))


def read_outcome(split_dir: Path, shard: Path, reference: dict[str, str], **options) -> tuple[str, int, str]:
    """How reading a damaged split ended: (outcome, altered samples delivered, check that fired).

    outcome: "named" (an mmdata error naming the shard), "unnamed" (any other exception), "identical" or
    "silent" (no error; the data delivered equals the reference or not). Altered samples: delivered ones
    differing from the reference (a partial sample, missing a field, differs too). Samples are read one per
    batch so that everything delivered before an error is counted.
    """
    delivered: dict[str, str] = {}
    try:
        for batch in mmdata.load(split_dir, shuffle=False, batch_size=1, **options):
            delivered[batch["__key__"][0]] = sample_digest(batch)
    except Exception as exc:  # noqa: BLE001 - classifying what the reader raised is the point
        outcome = "named" if type(exc).__name__ in NAMED and shard.name in str(exc) else "unnamed"
        check = next((label for fragment, label in CHECKS if fragment in str(exc)), "other")
    else:
        outcome, check = ("identical" if delivered == reference else "silent"), ""
    return outcome, sum(reference.get(key) != digest for key, digest in delivered.items()), check


def problems(out: Path) -> list[str]:
    """What ``verify`` finds wrong with a corpus output (shortened), empty when it passes."""
    return [p[:160] for found in verify(out).values() for p in found]


def verify_flags(split_dir: Path, shard: Path) -> bool:
    """True when ``verify`` reports a problem naming ``shard``."""
    return any(shard.name in problem for problems in verify(split_dir).values() for problem in problems)


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    """(name, payload) of every member, read with Python's tarfile alone."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def tar_outcome(path: Path, reference: list[tuple[str, bytes]]) -> str:
    """The tar-only baseline: "error", "identical" or "silent" (fewer or altered members, no error)."""
    try:
        members = tar_members(path)
    except (tarfile.TarError, OSError, EOFError):
        return "error"
    return "identical" if members == reference else "silent"


@contextmanager
def damaged(path: Path, data: bytes) -> Iterator[None]:
    """Replace a file's bytes for the block, restoring the original afterwards."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


def share(part: int, whole: int) -> str:
    """``part/whole (pct%)``."""
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else f"{part}/0"


# ------------------------------------------------------------------------------------------ data preparation


def make_raw(work: Path, name: str, train: int, test: int) -> Path:
    """A synthetic AV-MNIST raw corpus (``train`` rows, the last train // 12 become valid)."""
    return SYNTHS["avmnist"](work / name, train=train, test=test)


def shard_once(root: Path, out: Path, max_samples: int) -> Path:
    """``mmdata shard`` into ``out`` (must succeed); the run goes into the ledger."""
    run = subprocess.run(shard_cmd(root, out, max_samples), env=ENV, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"clean shard run failed: {error_line(run.stderr)}")
    LEDGER.add(out)
    return out


# ---------------------------------------------------------------------------------------------- truncation


def block_boundaries(shard: Path, size: int) -> list[int]:
    """Every member-header offset and every 512-byte block of the end-of-archive padding (cut points)."""
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    end = members[-1].offset_data + -(-members[-1].size // 512) * 512
    return [m.offset for m in members] + list(range(end, size, 512))


def truncation_figure(split_dir: Path, shard: Path, trials: int, seed: int) -> Tally:
    """Cut ``shard`` at random offsets and at every block boundary; read, verify and tar-read each."""
    data = shard.read_bytes()
    bounds = block_boundaries(shard, len(data))
    randoms = make_rng(seed, "faults", "truncate").integers(1, len(data), trials).tolist()
    cuts = bounds + randoms
    reference, members = read_split(split_dir), tar_members(shard)
    reads, tars, checks, flagged, both, altered = Counter(), Counter(), Counter(), 0, 0, 0
    for cut in cuts:
        with damaged(shard, data[:cut]):
            outcome, bad, check = read_outcome(split_dir, shard, reference)
            checks[check] += bool(check)
            flags = verify_flags(split_dir, shard)
            tars[tar_outcome(shard, members)] += 1
        reads[outcome] += 1
        altered, flagged, both = altered + bad, flagged + flags, both + (flags and outcome == "named")
    print(f"\n[truncation] {len(cuts)} cuts of {shard.name} ({len(data)} B, {len(members)} members): "
          f"{len(randoms)} random offsets + {len(bounds)} header/end-of-archive block boundaries")
    print(f"  mmdata.load: named error {share(reads['named'], len(cuts))}; unnamed error {reads['unnamed']}; "
          f"no error {reads['identical'] + reads['silent']}; partial/altered samples delivered: {altered}; "
          f"caught by: {dict(checks)}")
    print(f"  verify:      flagged the shard {share(flagged, len(cuts))}")
    print(f"  baseline, tarfile alone: raised {share(tars['error'], len(cuts))}; read fewer/altered members "
          f"silently {tars['silent']}; read every member intact {tars['identical']}")
    return Tally("truncation (load and verify)", len(cuts), both, reads["silent"] + altered)


# ------------------------------------------------------------------------------------------------ bit flips


def region_of(shard: Path, size: int) -> np.ndarray:
    """Per byte of a shard: 0 header, 1 payload, 2 block padding after a payload, 3 end-of-archive."""
    regions = np.full(size, 3, dtype=np.int8)
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            regions[m.offset:m.offset_data] = 0
            regions[m.offset_data:m.offset_data + m.size] = 1
            regions[m.offset_data + m.size:m.offset_data + -(-m.size // 512) * 512] = 2
    return regions


REGIONS = ("header", "payload", "padding", "end-of-archive")


def bitflip_figure(split_dir: Path, shard: Path, trials: int, seed: int) -> Tally:
    """Flip one random bit of ``shard`` per trial; tabulate detection by region and by check."""
    data = shard.read_bytes()
    regions, rng = region_of(shard, len(data)), make_rng(seed, "faults", "flip")
    reference, members = read_split(split_dir), tar_members(shard)
    table = {r: Counter() for r in range(len(REGIONS))}
    for offset, bit in zip(rng.integers(0, len(data), trials).tolist(), rng.integers(0, 8, trials).tolist()):
        flipped = bytearray(data)
        flipped[offset] ^= 1 << bit
        row = table[int(regions[offset])]
        with damaged(shard, bytes(flipped)):
            outcome, bad, check = read_outcome(split_dir, shard, reference)
            strict = read_outcome(split_dir, shard, reference, verify=True)[0]
            row.update({"n": 1, outcome: 1, "altered": bad, f"check {check}": bool(check),
                        "verify": verify_flags(split_dir, shard), "strict": strict == "named",
                        f"tar_{tar_outcome(shard, members)}": 1})
    total = sum((c for c in table.values()), Counter())
    print(f"\n[bit flips] {trials} single-bit flips at random offsets of {shard.name}")
    print(f"  {'region':15s} {'flips':>5s} {'verify':>7s} {'load(verify=True)':>17s} {'read: named':>11s} "
          f"{'unchanged':>9s} {'silent':>6s} {'tarfile silent':>14s}")
    for r, name in enumerate(REGIONS):
        c = table[r]
        print(f"  {name:15s} {c['n']:5d} {c['verify']:7d} {c['strict']:17d} {c['named']:11d} {c['identical']:9d} "
              f"{c['silent']:6d} {c['tar_silent']:14d}")
    print(f"  verify: {share(total['verify'], trials)}; load(verify=True): {share(total['strict'], trials)}; "
          f"read path: named error {share(total['named'], trials)}, unchanged data (flip in bytes never read) "
          f"{total['identical']}, unnamed error {total['unnamed']}, silent {total['silent']}; "
          f"altered samples delivered {total['altered']}")
    print(f"  read path caught by: { {k[6:]: v for k, v in total.items() if k.startswith('check ') and v} }")
    print(f"  baseline, tarfile alone: silent {share(total['tar_silent'], trials)}, raised {total['tar_error']}")
    handled = total["named"] + total["identical"]
    return Tally("bit flips (read path)", trials, handled, total["silent"] + total["altered"])


# --------------------------------------------------------------------------------------------------- kill -9


DVC_YAML = """stages:
  shard:
    cmd: {cmd}
    deps:
      - raw
    outs:
      - shards/avmnist
"""


def dvc(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``dvc`` in the scratch repo."""
    return subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=repo, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def dvc_repo(work: Path, train: int, test: int, max_samples: int) -> Path:
    """A scratch DVC repo (no git) whose one stage shards a synthetic raw corpus with ``mmdata shard``."""
    repo = work / "dvc"
    repo.mkdir(parents=True)
    make_raw(repo, "raw", train, test)
    dvc(repo, "init", "--no-scm", "-q")
    cmd = " ".join(shard_cmd(Path("raw"), Path("shards/avmnist"), max_samples))
    (repo / "dvc.yaml").write_text(DVC_YAML.format(cmd=cmd))
    return repo


def phase(out: Path, stale: set[str]) -> str:
    """Where a run into ``out`` is: "writing" (a new temp folder), "published", or "not started"."""
    if {p.name for p in out.parent.glob(f"{out.name}.tmp-*")} - stale:
        return "writing"
    return "published" if out.exists() else "not started"


def timed_clean_run(repo: Path) -> tuple[float, float]:
    """Run the stage once, polling the output: (seconds until writing began, seconds in all)."""
    out, start, began = repo / "shards" / "avmnist", time.monotonic(), None
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro", "-f", "--no-run-cache"],
                            cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if began is None and out.parent.is_dir() and phase(out, set()) == "writing":
            began = time.monotonic() - start
        time.sleep(0.005)
    if proc.returncode:
        raise SystemExit("clean dvc repro failed")
    total = time.monotonic() - start
    return began or 0.0, total


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER), so killed trials get reaped as init would.

    Why: a killed ``dvc``'s child ``mmdata`` is re-parented; where PID 1 does not reap orphans (containers), it
    stays a zombie, and a zombie's pid looks alive to DVC's rwlock check and to mmdata's stale-temp cleanup.
    """
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap() -> None:
    """Collect every exited child (the kill trials' orphans adopted as subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_gone(pgid: int, timeout: float = 10) -> bool:
    """Wait until no process of group ``pgid`` remains, zombies included, reaping the ones adopted.

    Zombies count: until reaped, a pid still exists, and DVC's rwlock check and mmdata's stale-temp cleanup
    both take an existing pid for a live run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        members = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                members += int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid
            except (OSError, IndexError, ValueError):
                continue
        if not members:
            return True
        time.sleep(0.02)
    return False


def recovery_path(stdout: str) -> str:
    """How ``dvc repro`` recovered: it re-ran the stage, checked the outputs out of its cache, or did nothing."""
    if "Running stage" in stdout:
        return "re-ran mmdata shard"
    return "checkout from DVC cache" if "is cached" in stdout else "nothing to do"


def kill_trial(repo: Path, delay: float, clean: dict[str, str], keep_cache: bool) -> dict:
    """One kill -9 of ``dvc repro -f`` after ``delay`` s, then ``dvc repro``; what was seen and recovered.

    Without ``keep_cache`` the DVC cache is emptied first, so the recovery has to re-run ``mmdata shard``
    (exercising its own cleanup); with it, DVC restores the outputs that dvc.lock names from its cache.
    """
    out = repo / "shards" / "avmnist"
    if not keep_cache:
        shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    stale = {p.name for p in out.parent.glob(f"{out.name}.tmp-*")}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro", "-f", "--no-run-cache"],
                            cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: kill dvc and mmdata together
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, at_kill = group_gone(proc.pid), phase(out, stale)
    looks_done = out.exists() and any(out.glob("*/manifest.json"))
    recovery, manual = dvc(repo, "repro"), False
    if recovery.returncode and "RWLock-file" in recovery.stderr and "corrupted" in recovery.stderr:
        # DVC rewrites .dvc/tmp/rwlock in place; a kill mid-write leaves it empty and every later dvc command
        # fails until it is removed. Remove it (the manual fix) so the trials stay independent, and count it.
        (repo / ".dvc" / "tmp" / "rwlock").unlink(missing_ok=True)
        recovery, manual = dvc(repo, "repro"), error_line(recovery.stderr)
    LEDGER.add(out)
    ok = recovery.returncode == 0
    return {"phase": "finished" if finished else at_kill, "gone": gone, "manual": manual,
            "partial_visible": looks_done and output_digests(out) != clean, "rc": recovery.returncode,
            "error": error_line(recovery.stderr) if recovery.returncode else "",
            "path": recovery_path(recovery.stdout) if ok else "failed",
            "identical": ok and output_digests(out) == clean, "problems": problems(out) if ok else [],
            "verified": ok and not problems(out), "leftovers": leftovers(out)}


def kill_figure(work: Path, trials: int, seed: int) -> Tally:
    """``kill -9`` of the shard stage's process group at random times, then ``dvc repro`` (SHW-01)."""
    repo, adopted = dvc_repo(work, train=600, test=100, max_samples=25), become_subreaper()
    began, total = timed_clean_run(repo)
    clean = output_digests(repo / "shards" / "avmnist")
    LEDGER.add(repo / "shards" / "avmnist")
    # Delays cover the stage from shortly before its first shard to the end of dvc's own bookkeeping.
    delays = make_rng(seed, "faults", "kill").uniform(0.8 * began, total, trials)
    results = [kill_trial(repo, float(d), clean, keep_cache=bool(i % 2)) for i, d in enumerate(delays)]
    good = sum(r["identical"] and r["verified"] and not r["partial_visible"] and not r["manual"] for r in results)
    manual = [r for r in results if r["manual"]]
    print(f"\n[kill -9] {trials} trials: `dvc repro -f --no-run-cache` of a `mmdata shard` stage in a scratch repo "
          f"(clean run {total:.2f} s, writing from {began:.2f} s), process group killed after a uniform "
          f"{0.8 * began:.2f}-{total:.2f} s, then `dvc repro`; even trials empty the DVC cache first so the "
          f"recovery re-runs the stage; killed orphans reaped as init would: {adopted}")
    print(f"  state at the kill: {dict(Counter(r['phase'] for r in results))}; process group gone after the kill: "
          f"{sum(r['gone'] for r in results)}/{trials}; recovery: {dict(Counter(r['path'] for r in results))}")
    print(f"  published-looking partial output before recovery: {sum(r['partial_visible'] for r in results)}")
    print(f"  recovered byte-identical (shard sha256 + index) and verified, by `dvc repro` alone: "
          f"{share(good, trials)}; only after removing DVC's corrupted .dvc/tmp/rwlock by hand: "
          f"{sum(r['identical'] and r['verified'] for r in manual)}; not recovered: "
          f"{sum(not (r['identical'] and r['verified']) for r in results)}")
    for message in sorted({r["manual"][:200] for r in manual}):
        print(f"    first `dvc repro` after the kill: {message}")
    strays = Counter((r["path"], bool(r["leftovers"])) for r in results)
    print(f"  trials leaving temp/lock files next to the output after recovery, by recovery: "
          f"{ {path: n for (path, left), n in strays.items() if left} }")
    for r in results:
        rerun_left = r["leftovers"] and r["path"].startswith("re-ran")
        if r["rc"] or not r["identical"] or not r["verified"] or rerun_left:
            print(f"    trial ({r['phase']}, {r['path']}): rc {r['rc']} {r['error'][:160]} verify: "
                  f"{r['problems'][:1]} left: {r['leftovers']}")
    silent = sum(r["partial_visible"] or (r["rc"] == 0 and not r["identical"]) for r in results)
    return Tally("kill -9 + dvc repro", trials, good, silent)


# -------------------------------------------------------------------------------------------- concurrent runs


def concurrent_trial(root: Path, out: Path, stagger: float, existing: Path | None, wait: bool,
                     clean: dict[str, str]) -> dict:
    """Two ``mmdata shard`` runs into ``out``, the second ``stagger`` s later (with ``--wait``: queued)."""
    shutil.rmtree(out, ignore_errors=True)
    if existing is not None:
        shutil.copytree(existing, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = [out.parent / f"run{i}.log" for i in range(2)]  # files, not pipes: progress bars could fill a pipe
    commands = [shard_cmd(root, out, 25), shard_cmd(root, out, 25) + (["--wait"] if wait else [])]
    procs = []
    for i, (log, command) in enumerate(zip(logs, commands)):
        time.sleep(stagger * i)
        with open(log, "w") as stderr:
            procs.append(subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr))
    errors = [error_line(log.read_text()) if p.wait(timeout=600) else "" for p, log in zip(procs, logs)]
    complete = out.exists() and len(list(out.glob("*/manifest.json"))) == 3
    LEDGER.add(out)
    found = problems(out) if complete else ["incomplete or missing output"]
    return {"rcs": tuple(p.returncode for p in procs), "errors": errors, "wait": wait, "problems": found,
            "good": complete and output_digests(out) == clean and not found,
            "silent": complete and output_digests(out) != clean and not found,
            "named": all(named_line(e) for e in errors if e), "leftovers": leftovers(out)}


def concurrent_figure(work: Path, trials: int, seed: int) -> Tally:
    """Two writers of one output at once: fresh or over an earlier output, second plain or ``--wait`` (SHW-05)."""
    root = work / "dvc" / "raw" if (work / "dvc" / "raw").exists() else make_raw(work, "raw_conc", 600, 100)
    reference = shard_once(root, work / "conc_ref" / "avmnist", 25)
    clean, out = output_digests(reference), work / "conc" / "avmnist"
    # Both runs import for about as long as the first then writes, so these staggers overlap the writing.
    staggers = make_rng(seed, "faults", "concurrent").uniform(0.0, 0.6, trials)
    results = [concurrent_trial(root, out, float(s), reference if i % 2 else None, bool(i // 2 % 2), clean)
               for i, s in enumerate(staggers)]
    print(f"\n[concurrent] {trials} trials: two `mmdata shard` into one --out, the second 0-0.6 s later; odd "
          f"trials over an earlier output, trials 2-3 mod 4 with the second run given --wait")
    for wait in (False, True):
        group = [r for r in results if r["wait"] == wait]
        print(f"  second run {'--wait' if wait else 'plain '}: exit statuses (first, second) "
              f"{dict(Counter(r['rcs'] for r in group))}; published output complete, verified and byte-identical "
              f"{share(sum(r['good'] for r in group), len(group))}; every failure a named error "
              f"{sum(r['named'] for r in group)}/{len(group)}; stray files after both ended "
              f"{sum(bool(r['leftovers']) for r in group)}")
    for message in sorted({e[:200] for r in results for e in r["errors"] if e} | {
            f"verify: {p}" for r in results for p in r["problems"][:1]}):
        print(f"    {message}")
    handled = sum(r["good"] and r["named"] for r in results)
    return Tally("concurrent writers", trials, handled, sum(r["silent"] for r in results))


# ------------------------------------------------------------------------------------------------- disk full


def tmpfs_bytes(out: Path) -> int:
    """Bytes a corpus output takes on tmpfs (whole pages per file)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in out.rglob("*") if p.is_file())


def disk_full_trial(root: Path, mount: Path, size: int) -> dict:
    """``mmdata shard`` onto a fresh tmpfs of ``size`` bytes; exit status, message and what remained."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip() or f"mount exited {done.returncode}"}
    try:
        out = mount / "avmnist"
        run = subprocess.run(shard_cmd(root, out, 10), env=ENV, capture_output=True, text=True)
        line = error_line(run.stderr)
        LEDGER.add(out)
        return {"rc": run.returncode, "line": line, "enospc": "ENOSPC" in line or "No space" in line,
                "path": str(mount) in line,
                "named": named_line(line), "committed": out.exists() and any(out.glob("*/manifest.json")),
                "left": sum(p.stat().st_size for p in mount.rglob("*") if p.is_file()),
                "verified": run.returncode == 0 and not problems(out)}
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def disk_full_figure(work: Path, root: Path, reference: Path, quick: bool) -> Tally | None:
    """``mmdata shard`` onto tmpfs mounts too small at different points of the run (SHW-03)."""
    need = tmpfs_bytes(reference)
    fractions = (0.3, 0.9) if quick else (0.1, 0.4, 0.7, 0.95)
    short = (1,) if quick else (1, 2, 4)
    sizes = [2 << 20] + [int(need * f) // PAGE * PAGE for f in fractions] + [need - k * PAGE for k in short]
    print(f"\n[disk full] `mmdata shard` onto tmpfs mounts; the output needs {need} B on tmpfs")
    results = []
    for size in sizes + [need + 64 * PAGE]:  # the last is the control: it must succeed
        r = disk_full_trial(root, work / "tmpfs", size)
        if "error" in r:
            print(f"  not measured: mounting tmpfs failed ({r['error']})")
            return None
        results.append(r)
        control = size > need
        print(f"  {'control ' if control else ''}size {size:8d} B: exit {r['rc']}, ENOSPC named {r['enospc']}, "
              f"mmdata error class {r['named']}, names a path {r['path']}, output committed {r['committed']}, "
              f"bytes left {r['left']}"
              f"{', verified ' + str(r['verified']) if control else ''}")
        if not control:
            print(f"      {r['line'][:220]}")
    failed = results[:-1]
    good = [r["rc"] != 0 and r["enospc"] and r["named"] and not r["committed"] for r in failed]
    print(f"  runs ending with exit != 0, ENOSPC in a named error and no committed output: "
          f"{share(sum(good), len(failed))}; control run succeeded and verified: "
          f"{results[-1]['rc'] == 0 and results[-1]['verified']}")
    return Tally("disk full", len(failed), sum(good), sum(r["rc"] == 0 or r["committed"] for r in failed))


# ---------------------------------------------------------------------------------------------- DDP balance


PARTITIONS = ("shard", "sample")
MODES = (("shard", False), ("sample", False), ("sample", True))


def rank_epoch(split: Path, world: int, rank: int, workers: int, partition: str, drop: bool) -> tuple:
    """(key batches, padded, dropped, shards read) of one rank's epoch."""
    loader = mmdata.load(split, fields=["label"], batch_size=16, seed=0, epoch=1, rank=rank, world_size=world,
                         num_workers=workers, partition=partition, drop_remainder=drop)
    batches = [tuple(b["__key__"]) for b in loader]
    shards = {loader.shards.index["shard"][r] for rows in loader.plan() for r in rows}
    return batches, loader.padded, loader.dropped, len(shards)


def ddp_figure(split: Path, worlds: tuple[int, ...], workers: tuple[int, ...]) -> None:
    """Batch-count spread, padding and cuts per rank for each partition mode (TRN-01/03)."""
    rows = len(mmdata.load(split, fields=["label"]).shards.index["key"])
    sizes = [s["rows"] for s in json.loads((split / "manifest.json").read_text())["shards"]]
    print(f"\n[DDP balance] {rows} rows in shards of {sizes}; ranks simulated in one process, batch 16, "
          f"workers {list(workers)} (spread = max - min batches over ranks, per worker count)")
    print(f"  {'partition':22s} {'world':>5s} {'batches':>7s} {'spread':>8s} {'same batches':>12s} "
          f"{'padded':>14s} {'dropped':>7s} {'shards/rank':>11s}")
    for partition, drop in MODES:
        for world in worlds:
            try:
                epochs = {w: [rank_epoch(split, world, r, w, partition, drop) for r in range(world)] for w in workers}
            except ValueError as exc:
                print(f"  {partition:22s} {world:5d}  refused: {exc}")
                continue
            base = epochs[workers[0]]
            spread = "/".join(str(max(len(e[0]) for e in ep) - min(len(e[0]) for e in ep)) for ep in epochs.values())
            same = all([e[0] for e in ep] == [e[0] for e in base] for ep in epochs.values())
            padded, dropped = sum(e[1] for e in base), sum(e[2] for e in base)
            label = partition + (" + drop_remainder" if drop else "")
            print(f"  {label:22s} {world:5d} {len(base[0][0]):7d} {spread:>8s} {str(same):>12s} "
                  f"{padded:5d} ({100 * padded / rows:5.1f}%) {dropped:7d} {max(e[3] for e in base):11d}")


def partition_speed(split: Path, world: int = 4, repeats: int = 21) -> None:
    """Samples/s of rank 0's epoch (all fields, no workers) under each partition: what locality is worth here.

    The two partitions alternate, so drift in the machine's load hits both alike.
    """
    loaders = {p: mmdata.load(split, batch_size=16, rank=0, world_size=world, partition=p) for p in PARTITIONS}
    runs: dict[str, list[float]] = {p: [] for p in PARTITIONS}
    for _ in range(repeats):
        for partition, loader in loaders.items():
            start = time.perf_counter()
            count = sum(len(batch["__key__"]) for batch in loader)
            runs[partition].append(count / (time.perf_counter() - start))
    rates = {p: sorted(r)[repeats // 2] for p, r in runs.items()}
    print(f"  read speed, rank 0 of {world}, all fields, no workers, page cache warm (median of {repeats}): "
          + ", ".join(f"{name} {rate:.0f} samples/s" for name, rate in rates.items()))


# ------------------------------------------------------------------------------------------------- resources


def process_state() -> tuple[int, float, int]:
    """(open fds, RSS MiB, live child processes) of this process."""
    fds = len(os.listdir("/proc/self/fd"))
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmRSS")) / 1024
    children = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children += int(fields[1]) == os.getpid() and fields[0] != "Z"
    return fds, rss, children


def resource_figure(split: Path, epochs: int, workers: int) -> None:
    """fds, RSS and child processes after epoch 1, after ``epochs`` epochs and at worst in between (SHR-11)."""
    loader = mmdata.load(split, batch_size=32, num_workers=workers, seed=0)
    gc.collect()
    before, states = process_state(), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            del batch
        gc.collect()  # batches still referenced hold shared-memory fds; count what the loader itself keeps
        states.append(process_state())
    print(f"\n[resources] {epochs} epochs of {len(loader)} batches, all fields, {workers} workers (mmdata.Loader "
          f"starts its workers per epoch; persistent workers are not offered)")
    print(f"  before: {before[0]} fds, RSS {before[1]:.0f} MiB, {before[2]} children")
    for label, (fds, rss, children) in (("after epoch 1", states[0]), (f"after epoch {epochs}", states[-1])):
        print(f"  {label:15s}: {fds} fds, RSS {rss:.0f} MiB, {children} live children")
    print(f"  growth from epoch 1 to {epochs}: {states[-1][0] - states[0][0]:+d} fds, "
          f"{states[-1][1] - states[0][1]:+.1f} MiB RSS, {states[-1][2] - states[0][2]:+d} children; worst after "
          f"any epoch: {max(s[0] for s in states)} fds, {max(s[1] for s in states):.0f} MiB, "
          f"{max(s[2] for s in states)} children")


# --------------------------------------------------------------------------------------------------- summary


def summary(tallies: list[Tally]) -> None:
    """Cases tried, share handled, silent outcomes, and the sample ledger over every shard run."""
    tried, handled, silent = (sum(getattr(t, a) for t in tallies) for a in ("tried", "handled", "silent"))
    print(f"\n[summary] {tried} fault cases tried; handled (named error, verify finding, byte-identical recovery "
          f"or unchanged data): {share(handled, tried)}; silent wrong outcomes: {silent}")
    for t in tallies:
        print(f"  {t.name:28s} tried {t.tried:5d}  handled {share(t.handled, t.tried):>20s}  silent {t.silent}")
    unaccounted = LEDGER.raw - LEDGER.written - LEDGER.skipped
    print(f"  samples over {LEDGER.runs} published shard runs: raw {LEDGER.raw} = written {LEDGER.written} + "
          f"skipped {LEDGER.skipped}; unaccounted {unaccounted}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small trial counts (about 30 s)")
    parser.add_argument("--truncations", type=int, default=300, help="random cut offsets (+ every boundary)")
    parser.add_argument("--flips", type=int, default=300, help="random single-bit flips")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 trials of dvc repro")
    parser.add_argument("--concurrent", type=int, default=8, help="trials of two concurrent shard runs")
    parser.add_argument("--epochs", type=int, default=20, help="loader epochs for the resource figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.truncations, args.flips, args.kills, args.concurrent, args.epochs = 60, 60, 4, 4, 5
    worlds, workers = ((1, 4, 8), (0, 2)) if args.quick else ((1, 2, 3, 4, 8), (0, 1, 2))
    print(f"mmdata {mmdata.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, uid {os.getuid()}")
    with tempfile.TemporaryDirectory(prefix="mmdata-faults-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        small = make_raw(work, "raw_small", 120, 24)
        small_out = shard_once(small, work / "small" / "avmnist", 10)
        test = small_out / "test"
        shard = sorted(test.glob("*.tar"))[0]
        tallies = [truncation_figure(test, shard, args.truncations, args.seed),
                   bitflip_figure(test, shard, args.flips, args.seed),
                   kill_figure(work, args.kills, args.seed),
                   concurrent_figure(work, args.concurrent, args.seed)]
        tallies.append(disk_full_figure(work, small, small_out, args.quick))
        ddp = shard_once(work / "dvc" / "raw", work / "ddp" / "avmnist", 60) / "train"
        ddp_figure(ddp, worlds, workers)
        partition_speed(ddp)
        resource_figure(ddp, args.epochs, workers=2)
        summary([t for t in tallies if t is not None])
    return 0


if __name__ == "__main__":
    sys.exit(main())
