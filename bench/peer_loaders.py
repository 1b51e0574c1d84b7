"""The peer loaders ``bench/peers.py`` measures: webdataset over our shards, MMF per-file, MultiBench load-all.

Each factory returns ``make() -> epoch(e) -> iterable of batches`` so every contender is timed the same way.
Behaviour is reimplemented from the peers' documented facts (see ``bench/README.md``); no code is copied.
"""
from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import read_speed as rs
from mmdata.shards.collate import collate
from mmdata.shards.read import SplitShards

IMAGE_EXTS = ("jpg", "jpeg", "png")
# MMF's image normalisation for Hateful Memes and MM-IMDb (mmf/configs/datasets/*/defaults.yaml).
MMF_MEAN = np.array([0.46777044, 0.44531429, 0.40661017])
MMF_STD = np.array([0.12221994, 0.12145835, 0.14380469])
# Fields the MultiBench loaders deliver (the other contenders then read only these).
MULTIBENCH_FIELDS = {"avmnist": ["image", "audio_spec", "label"],
                     "mosi": ["feat_text", "feat_audio", "feat_vision", "label"],
                     "mosei": ["feat_text", "feat_audio", "feat_vision", "label"]}


def fields_of(name: str, shards: Path) -> list[str]:
    """The fields every contender of corpus ``name`` reads (all stored fields unless a MultiBench peer fits)."""
    return MULTIBENCH_FIELDS.get(name) or list(SplitShards.open(shards / "train").features)


# --------------------------------------------------------------------------------------------- webdataset


def _ext(key: str) -> str:
    return key.rsplit(".", 1)[-1].lower()


def npy_zero_copy(key: str, data: bytes) -> np.ndarray | None:
    """A webdataset handler: ``.npy`` header parsed, payload mapped with ``np.frombuffer`` (no copy)."""
    if _ext(key) != "npy":
        return None
    stream = io.BytesIO(data)
    major, _ = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def image_pil(key: str, data: bytes) -> np.ndarray | None:
    """A webdataset handler: PIL decode to an array in the file's own mode (RGB uint8, 16-bit grey, ...)."""
    if _ext(key) not in IMAGE_EXTS:
        return None
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def image_cv2(key: str, data: bytes) -> np.ndarray | None:
    """A webdataset handler: cv2.imdecode, colour images converted BGR -> RGB by cvtColor."""
    if _ext(key) not in IMAGE_EXTS:
        return None
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if array.ndim == 3 and array.shape[2] == 3 else array


def arrow_table(key: str, data: bytes) -> np.ndarray | None:
    """A webdataset handler for our Arrow IPC members (webdataset has none): column ``values`` as numpy."""
    if _ext(key) != "arrow":
        return None
    import pyarrow as pa

    column = pa.ipc.open_stream(pa.py_buffer(data)).read_all().column("values").combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return column.to_numpy()


NPY_OPTIONS = {"np.load": None, "zero-copy": npy_zero_copy}  # None: webdataset's default handler
IMAGE_OPTIONS = {"PIL": image_pil, "cv2": image_cv2}


def wds_variants(split_dir: Path) -> list[str]:
    """The decoder combinations webdataset offers for this split's codecs, e.g. ``npy=zero-copy img=cv2``."""
    codecs = set(json.loads((split_dir / "manifest.json").read_text())["codecs"].values())
    axes = []
    if "npy" in codecs:
        axes.append([f"npy={k}" for k in NPY_OPTIONS])
    if codecs & set(IMAGE_EXTS):
        axes.append([f"img={k}" for k in IMAGE_OPTIONS])
    if not axes:  # product() of no axes is one empty combination
        return ["default"]
    return [" ".join(combo) for combo in itertools.product(*axes)]


def _handlers(variant: str) -> list[Callable]:
    chosen = dict(part.split("=") for part in variant.split() if "=" in part)
    handlers = [arrow_table]
    if chosen.get("npy") and NPY_OPTIONS[chosen["npy"]]:
        handlers.append(NPY_OPTIONS[chosen["npy"]])
    if chosen.get("img"):
        handlers.append(IMAGE_OPTIONS[chosen["img"]])
    return handlers  # webdataset's basichandlers (txt, json, cls, npy by np.load) come after these


def _expander(shards: SplitShards, fields: list[str]) -> Callable[[Iterable[dict]], Iterable[dict]]:
    """A pipeline stage: member names -> field names, and a stored sample -> its viewed rows (pick/window)."""
    view, label = shards.view, shards.label

    def expand(samples: Iterable[dict]) -> Iterable[dict]:
        for raw in samples:
            sample = {k.rsplit(".", 1)[0]: v for k, v in raw.items() if not k.startswith("__")}
            if view is None:
                yield {"__key__": raw["__key__"], **{f: sample[f] for f in fields}}
                continue
            for j in range(len(sample[label])):  # one index row per element of the stored label
                row = {"__key__": f"{raw['__key__']}/{j}"}
                for f in fields:
                    value = sample[f]
                    if f == label:
                        value = value[j]
                    elif f in view.fields:
                        value = value[j] if view.kind == "pick" else value[j:j + view.length]
                    row[f] = value
                yield row
    return expand


def wds_epochs(split_dir: Path, fields: list[str], batch_size: int, variant: str) -> Callable[[], Callable]:
    """webdataset over the split's tars: shard shuffle, 1000-sample buffer, the decoders of ``variant``."""
    import webdataset as wds

    def make() -> Callable[[int], Iterable[Any]]:
        shards = SplitShards.open(split_dir)
        urls = [str(split_dir / s["name"]) for s in shards.manifest["shards"]]
        wanted = set(fields) | ({shards.label} if shards.view else set())
        select = (lambda fname: fname.rsplit("/", 1)[-1].split(".", 1)[-1].rsplit(".", 1)[0] in wanted)
        features = shards.features
        pipeline = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False, select_files=select, seed=0)
                    .decode(*_handlers(variant)).compose(_expander(shards, fields)).shuffle(1000, seed=0)
                    .batched(batch_size, collation_fn=lambda s: collate(s, features, fields), partial=True))
        return lambda e: pipeline
    return make


# --------------------------------------------------------------------------------------------- MMF


class MMFImages(Dataset):
    """MMF-style per-file dataset: annotations in RAM, each sample opens its image file with PIL."""

    def __init__(self, items: list[dict[str, Any]], size: tuple[int, int], text: str) -> None:
        self.items, self.size, self.text = items, size, text
        self.mean = torch.tensor(MMF_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(MMF_STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        item = self.items[i]
        with Image.open(item["path"]) as img:
            img = img.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
        image = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255.0)  # ToTensor
        image = (image - self.mean) / self.std  # Normalize
        return {"__key__": str(item["id"]), "image": image, "label": item["label"], self.text: item["text"]}


def mmf_consume(batch: dict[str, Any]) -> tuple[int, np.ndarray]:
    """Sums in mmdata's order and units: the normalised image mapped back to 0..255 channel by channel."""
    image = batch["image"].double()
    n_pix = image[:, 0].numel()
    channel = image.sum(dim=(0, 2, 3)).numpy()
    image_sum = float((255.0 * (channel * MMF_STD + n_pix * MMF_MEAN)).sum())
    text = next(k for k in batch if k.startswith("text"))
    return len(batch["__key__"]), np.array([image_sum, float(batch["label"].double().sum()),
                                            float(sum(len(t) for t in batch[text]))])


def _hateful_items(raw: Path) -> list[dict[str, Any]]:
    lines = (raw / "train.jsonl").read_text().splitlines()
    return [{"id": r["id"], "path": raw / r["img"], "label": int(r["label"]), "text": r["text"]}
            for r in map(json.loads, lines) if r]


def _mmimdb_items(raw: Path, classes: list[str]) -> list[dict[str, Any]]:
    split = next(raw.rglob("split.json"))
    items = []
    for movie in json.loads(split.read_text())["train"]:
        meta = json.loads((split.parent / "dataset" / f"{movie}.json").read_text())
        label = np.array([g in meta.get("genres", []) for g in classes], dtype=np.float32)
        # MMF takes plot[0]; the shards hold the longest plot (the GMU/MMBT choice): read that one to compare.
        items.append({"id": movie, "path": split.parent / "dataset" / f"{movie}.jpeg", "label": label,
                      "text": max(meta["plot"], key=len)})
    return items


def mmf_epochs(name: str, raw: Path, shards: Path, batch_size: int) -> Callable[[], Callable]:
    def make() -> Callable[[int], Iterable[Any]]:
        features = SplitShards.open(shards / "train").features
        size = tuple(features["image"].shape[:2])
        if name == "hateful_memes":
            dataset = MMFImages(_hateful_items(raw), size, "text")
        else:
            dataset = MMFImages(_mmimdb_items(raw, list(features["label"].classes)), size, "text_plot")
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
        return lambda e: loader
    return make


# --------------------------------------------------------------------------------------------- MultiBench


def multibench_epochs(name: str, raw: Path, batch_size: int) -> Callable[[], Callable]:
    def make() -> Callable[[int], Iterable[Any]]:
        if name == "avmnist":
            loader, _ = rs.avmnist_raw(raw, batch_size, 0)
        else:
            loader, _ = affect_raw(raw / ("mosi_data.pkl" if name == "mosi" else "mosei_senti_data.pkl"), batch_size)
        return lambda e: loader
    return make


def affect_raw(pickle_path: Path, batch_size: int) -> tuple[DataLoader, int]:
    """MultiBench's affect loader (read_speed.mosi_raw) for either MulT pickle."""
    from mmdata.modalities import safe_pickle

    data = {split: rs._drop_empty_text(arrays) for split, arrays in safe_pickle.load(pickle_path).items()}
    return DataLoader(rs._AffectStyle(data["train"]), batch_size=batch_size, shuffle=True, num_workers=0,
                      collate_fn=rs._pad_batch), 0


def multibench_consume(name: str) -> Callable[[Any], tuple[int, np.ndarray]]:
    """Sums in mmdata's (sorted field) order and units."""
    def avmnist(batch: list[torch.Tensor]) -> tuple[int, np.ndarray]:
        image, audio, label = (t.double() for t in batch)
        return len(label), np.array([float(audio.sum()) * 255.0, float(image.sum()), float(label.sum())])

    def affect(batch: tuple) -> tuple[int, np.ndarray]:
        (vision, audio, text), _, _, labels = batch
        return len(labels), np.array([float(t.double().sum()) for t in (audio, text, vision, labels)])
    return avmnist if name == "avmnist" else affect


def raw_peers(name: str, raw: Path, shards: Path, batch_size: int) -> dict[str, tuple]:
    """The MMF / MultiBench contenders whose raw layout fits corpus ``name`` (may be none)."""
    if name in ("hateful_memes", "mmimdb"):
        return {"MMF per-file": (mmf_epochs(name, raw, shards, batch_size), mmf_consume, "mmf", 0.03)}
    if name in MULTIBENCH_FIELDS:
        return {"MultiBench load-all": (multibench_epochs(name, raw, batch_size), multibench_consume(name),
                                        "multibench", 1e-4)}
    return {}
