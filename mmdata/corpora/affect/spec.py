"""What differs between CMU-MOSI and CMU-MOSEI: file names, feature dims per release, split sizes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmdata.errors import ConfigError

RELEASES = ("auto", "mmsa", "mult", "multibench", "sdk")
VARIANTS = ("aligned", "unaligned")
SPLITS = ("train", "valid", "test")
#: MMSA file per variant: ``<root>/<NAME>/Processed/{aligned_50,unaligned_50}.pkl`` (MMSA config_regression.json).
MMSA_FILES = {"aligned": "aligned_50.pkl", "unaligned": "unaligned_50.pkl"}
FAMILY_NAMES = {"mmsa": "MMSA (thuiar/MMSA)", "mult": "MulT (yaohungt/Multimodal-Transformer)",
                "multibench": "MultiBench raw (pliang279/MultiBench)", "sdk": "CMU-MultimodalSDK"}
#: Word-aligned sequences are left-zero-padded to 50 steps in every pickle release and by the SDK's
#: ``get_tensors(seq_len=50)`` (which keeps the last 50 steps of a longer segment).
ALIGNED_LEN = 50
#: Vision computational sequences the SDK reader can use (normalised names, see :mod:`.sdk_files`).
SDK_VISION = ("facet42", "facet41", "openface")
TEXT_SOURCES = {"mmsa": "BERT token features (MMSA)", "mult": "GloVe word vectors (MulT)",
                "multibench": "GloVe word vectors (MultiBench)", "sdk": "GloVe word vectors (SDK)"}


@dataclass(frozen=True)
class AffectSpec:
    """Provenance and layout constants of one corpus.

    Attributes:
        name: corpus name (``mosi`` / ``mosei``).
        title: human name (``CMU-MOSI``).
        split_sizes: clips per split in the MMSA/MulT releases (documentation and describe()).
        mmsa_dirs: folders (relative to the root) searched for MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``.
        mult_files: variant -> MulT file name.
        multibench_file: MultiBench's word-aligned raw pickle.
        sdk_dirs: folders (relative to the root) searched for ``.csd`` files, besides the root.
        dims: release family -> {"text", "audio", "vision"} feature dims of its pickles.
        audio_kind, vision_kind: release family -> feature name in words (for the Field descriptions).
    """

    name: str
    title: str
    split_sizes: dict[str, int]
    mmsa_dirs: tuple[str, ...]
    mult_files: dict[str, str]
    multibench_file: str
    sdk_dirs: tuple[str, ...]
    dims: dict[str, dict[str, int]]
    audio_kind: dict[str, str]
    vision_kind: dict[str, str]


@dataclass(frozen=True)
class Options:
    """The reader options (== ``corpora.<name>.reader`` keys), checked."""

    release: str = "auto"
    variant: str = "aligned"
    sdk_vision: str = "facet42"
    folds: str | None = None

    def check(self, name: str) -> None:
        """ConfigError naming the valid values of the first bad option."""
        for option, value, valid in (("release", self.release, RELEASES), ("variant", self.variant, VARIANTS),
                                     ("sdk_vision", self.sdk_vision, SDK_VISION)):
            if value not in valid:
                raise ConfigError(f"{name}: unknown {option} {value!r}; valid: {', '.join(valid)}")
        if self.folds is not None and not Path(self.folds).is_file():
            raise ConfigError(f"{name}: folds file {self.folds!r} does not exist (point folds at the SDK's "
                              f"*_std_folds.py or a JSON with train/valid/test video ids)")


@dataclass(frozen=True)
class Located:
    """A release found under a root.

    Attributes:
        family: "mmsa", "mult", "multibench" or "sdk".
        variant: "aligned" or "unaligned".
        path: the pickle file, or the folder holding the ``.csd`` files.
        evidence: how the family was recognised, in words (for describe()).
    """

    family: str
    variant: str
    path: Path
    evidence: str
