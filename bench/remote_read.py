"""What do remote shards cost? ``mmdata.load`` samples/s of an epoch read from an S3 server vs the same shards local.

The S3 server is moto's (``python -m moto.server``) in its own process on 127.0.0.1, so it takes a core as a
real endpoint's network stack would not, and no network latency or bandwidth limit is modelled: the figures
show mmdata's own overhead (ranged GETs through s3fs, writing the cache, sha256 of every fetched shard, locks),
not a cloud's. Each repeat, in rotated order, times one "fresh process" epoch (per-process records dropped, so
every member's tar header and crc32 are checked, as a new training process does) of:

- ``local``: ``load(<split dir>)``;
- ``cold``: ``load("s3://...")`` with an empty cache directory (open + fetch of every shard + the epoch);
- ``warm``: the same URL with every shard already cached and its check recorded (open, the epoch);
- ``warm1`` (one run, not a median): the first process to re-open freshly fetched shards, which re-hashes
  each one (sha256) before recording its check (see ``mmdata/shards/cache.py``).

Figures are medians over repeats; ratios are remote / local samples/s (1 = no cost).

    python bench/remote_read.py [--corpora avmnist mosi] [--workers 0 2] [--batch-size 64] [--repeats 3]
                                [--shards data/shards] [--avmnist-rows N] [--json out.json]

``--avmnist-rows N`` adds an AV-MNIST synthesised with N train rows (250 rows, 4.6 MB a shard): the minis are
small enough that opening (a few HTTP requests) weighs on their epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mmdata
from mmdata.shards import cache, verified

from common import avmnist_shards, settled
from workers import corpus_shards

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a child process on a free port of 127.0.0.1; (process, endpoint URL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto server did not start within 30 s")


def upload(endpoint: str, split_dir: Path, bucket: str, prefix: str) -> str:
    """The split's files to ``s3://bucket/prefix/``; that URL."""
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
    client.create_bucket(Bucket=bucket)
    for path in sorted(split_dir.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def epoch_rate(source: str | Path, workers: int, batch_size: int, cache_dir: Path) -> float:
    """Samples/s of ``load(source)`` + one epoch, as a fresh process (per-process records dropped)."""
    verified.forget()
    cache.forget()
    start = time.perf_counter()
    rows = 0
    with mmdata.load(source, "train", batch_size=batch_size, num_workers=workers, cache_dir=cache_dir) as loader:
        for batch in loader:
            rows += len(batch["__key__"])
    return rows / (time.perf_counter() - start)


def measure(split_dir: Path, url: str, workers: int, batch_size: int, repeats: int, work: Path) -> dict:
    """Median samples/s of local, cold and warm epochs (rotated order each repeat)."""
    warm_dir = work / "warm-cache"
    epoch_rate(url, 0, batch_size, warm_dir)  # fill the warm cache once
    settled(warm_dir)
    first = epoch_rate(url, workers, batch_size, warm_dir)  # re-hashes once and records the check (<sha>.ok)
    rates: dict[str, list[float]] = {"local": [], "cold": [], "warm": []}
    kinds = list(rates)
    for r in range(repeats):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            cold_dir = work / f"cold-{r}"
            source = split_dir if kind == "local" else url
            rates[kind].append(epoch_rate(source, workers, batch_size, cold_dir if kind == "cold" else warm_dir))
            shutil.rmtree(cold_dir, ignore_errors=True)
    return {**{kind: statistics.median(values) for kind, values in rates.items()}, "warm_first": first}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", default=["avmnist", "mosi"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=Path, default=Path("data/shards"))
    parser.add_argument("--avmnist-rows", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.update(CREDENTIALS)
    server, endpoint = start_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # boto3 and s3fs read it
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="mmdata-remote-bench-") as tmp:
            work = Path(tmp)
            print(f"{'corpus':<14} {'workers':>7} {'local/s':>9} {'cold/s':>9} {'warm/s':>9} {'cold/local':>10} "
                  f"{'warm/local':>10} {'warm1/s':>9}")
            splits = {name: corpus_shards(name, args.shards, work) / "train" for name in args.corpora}
            if args.avmnist_rows:
                big = avmnist_shards(work / "big", train=args.avmnist_rows, test=100)
                splits[f"avmnist-{args.avmnist_rows}"] = settled(big) / "train"
            for name, split_dir in splits.items():
                url = upload(endpoint, split_dir, "bench", f"shards/{name}/train")
                for workers in args.workers:
                    got = measure(split_dir, url, workers, args.batch_size, args.repeats, work / f"{name}-{workers}")
                    row = {"corpus": name, "workers": workers, **got, "cold_ratio": got["cold"] / got["local"],
                           "warm_ratio": got["warm"] / got["local"]}
                    rows.append(row)
                    print(f"{name:<14} {workers:>7} {got['local']:>9.0f} {got['cold']:>9.0f} {got['warm']:>9.0f} "
                          f"{row['cold_ratio']:>10.2f} {row['warm_ratio']:>10.2f} {got['warm_first']:>9.0f}",
                          flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
