"""Turning each benchmark's rows into the report's table rows, and the plot (used by ``bench/report.py``).

A table row: ``section``, ``name`` (corpus / codec / case), ``ours`` and ``ref`` (values in ``unit``; "" means
samples/s), ``ratio`` (higher is better), ``reference`` (what was compared against), ``goal`` (met when
ratio >= goal; None: informational), ``met`` and an optional ``note``. A section that could not run is one row
``{"section", "status": "not measured: <reason>"}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def row(section: str, name: str, ours: float, ref: float, ratio: float, reference: str, goal: float | None,
        unit: str = "", note: str = "") -> dict[str, Any]:
    """One table row; ``met`` follows from ratio and goal."""
    return {"section": section, "name": name, "ours": ours, "ref": ref, "ratio": ratio, "reference": reference,
            "goal": goal, "met": None if goal is None else bool(ratio >= goal), "unit": unit, "note": note}


def missing(section: str, reason: str) -> dict[str, Any]:
    return {"section": section, "status": f"not measured: {reason}"}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("s", "ms"):
        return f"{value:.3g} {unit}"
    return f"{value:.0f} {unit}".strip() if abs(value) >= 10 else f"{value:.3g} {unit}".strip()


def peers(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        # A load-all loader's warm epoch reads RAM: no goal; its cold epoch (load + 1st epoch) must lose.
        goal = None if r["kind"] == "multibench" and r["phase"] == "warm" else 1.0
        note = r["options"] if r["kind"] == "webdataset" else ""
        if r["check"] != "ok":
            note = f"CHECK FAILED: {r['check']}; {note}"
        phase = "" if r["phase"] == "warm" else f" ({r['phase']}: load + 1st epoch)"
        out.append(row("peers", f"{r['corpus']}{phase}", r["ours"], r["ref"], r["ratio"], r["reference"], goal,
                       note=note))
    return out


def first_batch(rows: list[dict]) -> list[dict]:
    return [row("first batch", f"{r['corpus']} {r['metric']}", r["ours"], r["ref"], r["ratio"], r["reference"],
                r["goal"], unit=r["unit"], note=r.get("note", "")) for r in rows]


def codecs(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r.get("bench") == "codec_families":
            batch = r["batch"]
            out.append(row("ceiling", r["family"], 1e3 * batch / r["steady_ms_per_batch"],
                           1e3 * batch / r["ceiling_ms_per_batch"], r["ratio_steady"],
                           "decode ceiling (members in RAM, no checks)", 0.9,
                           note=f"first pass {r['ratio_first']:.2f}"))
        elif r.get("bench") == "shared_decodes":
            speedup = r["unshared_us_per_row"] / r["shared_us_per_row"]
            out.append(row("shared", f"stocks {r['days']} days, {r['windows']} windows", r["shared_us_per_row"],
                           r["unshared_us_per_row"], speedup, "one decode per row", None, unit="us/row"))
        else:
            out += generic("codecs", [r])
    return out


def workers(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if not r.get("workers"):
            continue
        ratio = r.get("steady_ratio") or r.get("first_ratio")
        base = r["steady_sps"] / ratio if r.get("steady_ratio") else r["first_sps"] / r["first_ratio"]
        out.append(row("workers", f"{r['corpus']} batch {r['batch_size']}",
                       r["steady_sps"] or r["first_sps"], base, ratio, "workers=0 (mmdata column: workers=2)", 1.0,
                       note=f"first epoch {r['first_ratio']:.2f}"))
    return out


def write(rows: list[dict]) -> list[dict]:
    """write_speed rows: each process count vs the encode ceiling per core, and 2 vs 1 process."""
    ceiling = next((r for r in rows if r.get("what") == "encode_ceiling"), None)
    if ceiling is None:
        return generic("write", rows)
    out = []
    parts = {r["processes"]: r for r in rows if r.get("what") == "independent_parts"}
    for r in rows:  # a whole release on disk: reading, fingerprint, index and manifests included
        if r.get("what") == "shard_corpus" and r["processes"] > 1:
            speedup = next(v for k, v in r.items() if k.startswith("speedup_vs_"))
            same = "" if r["identical"] else "OUTPUT BYTES DIFFER from 1 process"
            out.append(row("write", f"{r['corpus']} {r['samples']} raw items, shard_corpus {r['processes']} proc",
                           r["samples_per_s"], r["samples_per_s"] / speedup, speedup, "1 process", 1.8, note=same))
    for r in rows:
        if r.get("what") != "write_split":
            continue
        n, name = r["processes"], f"{r['corpus']} {r['samples']} samples, {r['processes']} proc"
        same = "" if r.get("identical", True) else "OUTPUT BYTES DIFFER from 1 process; "
        out.append(row("write", f"{name} / core", r["samples_per_s"] / n, ceiling["samples_per_s"],
                       r["ratio_to_ceiling_per_core"], "encode ceiling (1 core)", 0.8, note=same.strip("; ")))
        if "ratio_to_checked_ceiling_per_core" in r:  # the least any writer keeping the checks costs
            checked = r["samples_per_s"] / n / r["ratio_to_checked_ceiling_per_core"]
            out.append(row("write", f"{name} / core, checked", r["samples_per_s"] / n, checked,
                           r["ratio_to_checked_ceiling_per_core"], "encode + crc32 + sha256 x2 ceiling (1 core)", None))
        speedup = next((v for k, v in r.items() if k.startswith("speedup_vs_")), None)
        if n > 1 and speedup is not None:
            out.append(row("write", name, r["samples_per_s"], r["samples_per_s"] / speedup, speedup,
                           "1 process", 1.8, note=same.strip("; ")))
        if n in parts:  # the machine's own ceiling: n processes sharing nothing
            part = parts[n]
            ceiling_speedup = next(v for k, v in part.items() if k.startswith("speedup_vs_"))
            out.append(row("write", f"{n} independent 1-proc writes of 1/{n} each, at once", part["samples_per_s"],
                           part["samples_per_s"] / ceiling_speedup, ceiling_speedup, "1 process", None,
                           note=f"the machine's ceiling; the engine reaches {speedup / ceiling_speedup:.2f} of it"))
    return out


def samplers(rows: list[dict]) -> list[dict]:
    """samplers.py rows (seconds and ratio to the batch load): shown as load / cost, goal 20 (cost <= 5%)."""
    out = []
    for r in rows:
        if r["name"].startswith("load batch") or not r["seconds"]:
            continue
        gather = "bytes" in r  # goal 5: gather is judged by the bytes it copies, not the 5% line
        note = f"{r['gbps']:.2f} GB/s (clone {r.get('clone_gbps', 0):.2f})" if gather and "gbps" in r else ""
        # Shown without the 5% goal: a second batch read from shards is a batch load itself, and the loss's
        # backward is the training step's compute (the loss's forward keeps the goal).
        informational = gather or r["name"].startswith(("read negative batch", "tuple_infonce fwd+bwd"))
        out.append(row("samplers", f"{r['name']} b{r['batch']}", 1e3 * r["seconds"], 1e3 * r["seconds"] / r["ratio"],
                       1.0 / r["ratio"], "loading the batch (load ms / its ms)", None if informational else 20.0,
                       unit="ms", note=note))
    return out


def generic(section: str, rows: list[dict]) -> list[dict]:
    """Rows of a benchmark without an adapter: the first ``*ratio*`` key is the ratio, strings name the case."""
    out = []
    for r in rows:
        keys = [k for k in r if "ratio" in k and isinstance(r[k], (int, float))]
        if not keys:
            continue
        name = " ".join(f"{v}" for k, v in r.items() if isinstance(v, str) and k not in ("section", "reference"))
        name = name or " ".join(f"{k}={v}" for k, v in r.items() if isinstance(v, int) and "ratio" not in k)
        goal = r.get("goal") if isinstance(r.get("goal"), (int, float)) else None
        out.append(row(section, name, r.get("ours"), r.get("ref"), float(r[keys[0]]),
                       r.get("reference", keys[0]), goal, unit=r.get("unit", ""),
                       note=", ".join(f"{k} {r[k]:.2f}" for k in keys[1:])))
    return out or [missing(section, f"no ratio in its rows (keys: {sorted(rows[0]) if rows else []})")]


def plot(rows: list[dict], info: dict[str, Any], path: Path) -> None:
    """Horizontal bars of every ratio (log scale), green when its goal is met, a tick at each goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if not r.get("status") and r["ratio"] and r["ratio"] > 0]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(shown) + 1.6))
    colours = {True: "tab:green", False: "tab:red", None: "tab:gray"}
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, [r["ratio"] for r in shown], color=[colours[r["met"]] for r in shown])
    for y, r in zip(ys, shown):
        if r["goal"] is not None:
            ax.plot([r["goal"], r["goal"]], [y - 0.45, y + 0.45], color="black", linewidth=1.5)
    ax.set_yticks(ys, [f"{r['section']}: {r['name']}"[:60] for r in shown], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="gray", linewidth=0.5)
    ax.set_xlabel("ratio (higher is better; black tick = goal; green = met, red = not met, grey = no goal)")
    ax.set_title(f"mmdata performance ratios - {info['cpu'][:50]}, {info['cores_usable']} cores, "
                 f"commit {info['commit'][:8]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
