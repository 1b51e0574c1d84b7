"""Shards: codecs, deterministic atomic writing, manifest and index, checked reading and verification."""
from mmdata.shards.manifest import INDEX, MANIFEST

__all__ = ["INDEX", "MANIFEST"]
