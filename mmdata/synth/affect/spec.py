"""What the MOSI and MOSEI minis write differently: file names, sequence dims, which columns each release keeps."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "valid", "test")
RELEASES = ("mmsa", "mult", "multibench", "sdk")
ALIGNED_LEN = 50
#: COVAREP frames per second (10 ms hop), which sets a segment's duration from its audio frame count.
AUDIO_RATE = 100.0
#: Silence between two segments of a video (seconds); its frames belong to no segment.
GAP = 0.4
DIMS = {"covarep": 74, "glove": 300, "bert": 768}
#: The SDK's metadata keys (metadataconfigs.py), each stored as a JSON-encoded string.
METADATA_KEYS = ("root name", "computational sequence description", "dimension names",
                 "computational sequence version", "alignment compatible", "dataset name", "dataset version",
                 "creator", "contact", "featureset bib citation", "dataset bib citation")


@dataclass(frozen=True)
class SynthSpec:
    """Layout of one corpus's mini.

    Attributes:
        name: corpus name; title: human name (SDK metadata "dataset name").
        mmsa_dir: folder of the MMSA pickles; mult_files: (aligned, unaligned) MulT names;
        multibench_file: MultiBench raw pickle name.
        sdk_dir: folder of the .csd files; sdk_prefix: their file-name prefix (``CMU_MOSI``).
        vision: vision sequence -> (dim, .csd file suffix, root name), e.g. facet41 -> (47, ...).
        labels: (.csd file suffix, root name) of the labels sequence.
        pickle_audio: COVAREP columns the MMSA/MulT pickles keep (None: all 74).
        pickle_vision: (vision sequence, columns or None) the MMSA/MulT pickles keep.
        multibench_vision: the vision sequence of MultiBench's raw pickle.
        unaligned_len: padded lengths of the unaligned pickles (audio, vision).
        emotions: labels carry the six MOSEI emotions after the sentiment.
    """

    name: str
    title: str
    mmsa_dir: str
    mult_files: tuple[str, str]
    multibench_file: str
    sdk_dir: str
    sdk_prefix: str
    vision: dict[str, tuple[int, str, str]]
    labels: tuple[str, str]
    pickle_audio: tuple[int, ...] | None
    pickle_vision: tuple[str, tuple[int, ...] | None]
    multibench_vision: str
    unaligned_len: dict[str, int]
    emotions: bool

    @property
    def folds_file(self) -> str:
        """The SDK's standard-folds module name (``cmu_mosi_std_folds.py``)."""
        return f"{self.sdk_prefix.lower()}_std_folds.py"
