"""Synthetic corpora and shards are byte-identical whatever the BLAS kernel or CPU code path.

Every corpus is synthesised and sharded twice, in subprocesses imitating two machines, and every output file
(raw files, tar shards, index.parquet, manifests) is compared byte for byte:

- machine A: OpenBLAS's Haswell kernels (AVX2 + FMA) and numpy's native CPU dispatch (AVX-512 where present),
  one thread each for OpenBLAS, OpenMP and OpenCV, ``PYTHONHASHSEED=1``;
- machine B: OpenBLAS's Prescott kernels (SSE3, no FMA), numpy and OpenCV without their AVX-512 code paths
  (an AVX2-only CPU such as an AMD EPYC before Zen 4), two threads each, ``PYTHONHASHSEED=2``.

Before the fix, AV-MNIST's image files (a BLAS blur) and SUN RGB-D's shards (a BLAS rotation of the points)
differed between A and B. Probes in the worker prove that the two environments do change BLAS and numpy
results on this machine; where they cannot (another BLAS, no such CPU features), the test is skipped.
About 30 s on two cores (the two workers run in parallel), hence not marked slow.

Not imitated here: CPUs without AVX2/FMA (glibc then picks other libm variants, so float features such as
log-spectrograms may differ) and other library versions (the FFmpeg inside opencv-python encodes CREMA-D's
video; its version string is stripped from the files, see ``mmdata.synth.crema_d._strip_encoder``).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmdata.synth import SYNTHS

REPO = Path(__file__).resolve().parents[1]
#: numpy's and OpenCV's AVX-512 code paths, switched off to imitate an AVX2-only CPU.
NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX AVX512_CLX AVX512_CNL"
OPENCV_AVX512 = "AVX512F,AVX512-SKX,AVX512-CLX,AVX512-COMMON,AVX512BW,AVX512DQ,AVX512VL,AVX512CD"
#: Thread counts (OpenBLAS, OpenMP in open3d, OpenCV's pool) and string-hash seeds differ too: an output that
#: followed thread scheduling or set order would differ between the two.
THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
MACHINES = {
    "A": {"OPENBLAS_CORETYPE": "Haswell", "PYTHONHASHSEED": "1", **dict.fromkeys(THREADS, "1")},
    "B": {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512,
          "OPENCV_CPU_DISABLE": OPENCV_AVX512, "PYTHONHASHSEED": "2", **dict.fromkeys(THREADS, "2")},
}


def _numpy_features() -> set[str]:
    """The dispatch targets numpy can use on this CPU (names as NPY_DISABLE_CPU_FEATURES takes them)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return {name for name in __cpu_dispatch__ if __cpu_features__.get(name)}


def _env(machine: str) -> dict[str, str]:
    """This process's environment with the variables of ``machine`` (those numpy cannot disable left out)."""
    env = {k: v for k, v in os.environ.items() if k not in MACHINES["B"]}
    wanted = dict(MACHINES[machine])
    if "NPY_DISABLE_CPU_FEATURES" in wanted:  # numpy refuses to start when asked to disable what it lacks
        have = _numpy_features()
        wanted["NPY_DISABLE_CPU_FEATURES"] = " ".join(f for f in wanted["NPY_DISABLE_CPU_FEATURES"].split()
                                                      if f in have)
    env.update({k: v for k, v in wanted.items() if v})
    return env


def _run(machines: list[str], tmp_path: Path) -> dict[str, dict]:
    """Start the worker once per machine (in parallel) and return machine -> its JSON result."""
    procs = {m: subprocess.Popen([sys.executable, "-m", "tests.repro_worker", str(tmp_path / m)],
                                 cwd=REPO, env=_env(m), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in machines}
    results = {}
    for machine, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"worker {machine} failed:\n{err[-4000:]}"
        results[machine] = json.loads(out.strip().splitlines()[-1])
    return results


def _differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


def test_synth_and_shards_are_identical_across_blas_kernels_and_cpu_paths(tmp_path):
    results = _run(list(MACHINES), tmp_path)
    a, b = results["A"], results["B"]
    if a["probes"]["blas"] == b["probes"]["blas"]:
        pytest.skip("OPENBLAS_CORETYPE does not change this numpy's BLAS results (not OpenBLAS with DYNAMIC_ARCH?)")
    assert {p.split("/")[1] for p in a["files"]} == set(SYNTHS), "every corpus is synthesised and sharded"
    differ = _differences(a["files"], b["files"])
    assert not differ, f"{len(differ)} of {len(a['files'])} files differ between machines A and B: {differ[:20]}"


def test_fixed_order_products_match_blas_up_to_rounding():
    """The BLAS-free helpers compute the same products (up to rounding) on points and small matrices."""
    from mmdata.modalities.depth import apply_matrix, matmul_fixed

    rng = np.random.default_rng(0)
    points, matrix = rng.normal(size=(4, 5, 3)), rng.normal(size=(3, 3))
    np.testing.assert_allclose(apply_matrix(points, matrix), points @ matrix.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(matmul_fixed(matrix, matrix.T), matrix @ matrix.T, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        apply_matrix(points, rng.normal(size=(3, 4)))


def test_flv_carries_no_encoder_version_and_stays_consistent(tmp_path):
    """The FLV's onMetaData loses FFmpeg's version string; its sizes still add up and decord still reads it."""
    import decord

    from mmdata.synth import crema_d

    path = tmp_path / "clip.flv"
    crema_d.write_flv(path, np.full((5, 64, 64, 3), 100, np.uint8))
    data = path.read_bytes()
    assert b"Lavf" not in data and b"encoder" not in data
    size = int.from_bytes(data[14:17], "big")
    assert int.from_bytes(data[24 + size:28 + size], "big") == 11 + size  # PreviousTagSize of the script tag
    at = data.find(b"\x00\x08filesize\x00")
    assert struct.unpack(">d", data[at + 11:at + 19])[0] == len(data)
    assert len(decord.VideoReader(str(path))) == 5


def test_wav_is_quantised_before_libsndfile(tmp_path):
    """PCM values are ``clip(rint(x * 32768))`` whatever libsndfile's own float conversion would do."""
    import soundfile as sf

    from mmdata.synth import crema_d

    wave = np.linspace(-1.2, 1.2, 1001)
    crema_d.write_wav(tmp_path / "a.wav", wave)
    back, _ = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    np.testing.assert_array_equal(back, np.clip(np.rint(wave * 32768), -32768, 32767).astype(np.int16))


def test_log_mel_matches_librosa_without_its_blas_product():
    """CREMA-D's log-mel (fixed-order sum over frequency) equals librosa's melspectrogram up to float32 rounding."""
    import librosa

    from mmdata.modalities.audio import fixed_length, log_mel

    wave = (np.random.default_rng(0).normal(size=30000) * 0.1).astype(np.float32)
    samples = np.clip(fixed_length(wave, 66150), -1, 1)
    reference = librosa.feature.melspectrogram(y=samples, sr=22050, n_fft=512, hop_length=353, n_mels=64)
    np.testing.assert_allclose(log_mel(wave, 22050), np.log(reference + 1e-7), atol=1e-5)


def test_log_returns_are_multibench_rx():
    """``log(Open[t + 1] / Open[t])`` per ticker, computed with libm's log."""
    from mmdata.modalities.series import log_returns

    opens = np.random.default_rng(0).uniform(20, 200, (50, 3))
    np.testing.assert_allclose(log_returns(opens), np.diff(np.log(opens), axis=0), atol=1e-14)
