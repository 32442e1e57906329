"""The frozen encoders' outputs, computed once and read instead of pixels.

In the guide's stage 2 the EVA ViT-g and the image Q-Former are frozen, so every epoch decodes the
same clips and recomputes the same features: about 4 TFLOP per 8-frame clip, and on a busy node
the whole decoding cost. A feature cache holds, per clip, ``views`` times the image Q-Former's
output for each sampled frame (``(views, frames, query tokens, width)``, fp16), written by
``video-llama cache-features``: one view of the evaluation processor is exactly what training would
compute from pixels; several views of the training processor keep its augmentation (each epoch
draws one). A dataset with ``feature_cache`` returns them as ``frame_features`` instead of
``image``, and the model starts from its video Q-Former.

The cache folder describes itself (``cache.json``): the processor and the encoders it was made
with, and which file holds which clip.
"""

import json
import random
from pathlib import Path

from video_llama.common.errors import UserError

CACHE_INFO = "cache.json"
TENSOR = "features"  # the tensor's name in each clip's safetensors file


class FeatureCacheError(UserError, ValueError):
    pass


class FeatureCache:
    """A cache folder written by ``video-llama cache-features``, opened for reading."""

    def __init__(self, folder):
        self.folder = Path(folder)
        info_path = self.folder / CACHE_INFO
        if not info_path.is_file():
            raise FeatureCacheError(f"feature_cache {self.folder}: no {CACHE_INFO} there; write the cache with "
                                    "`video-llama cache-features --cfg-path YOUR.yaml --out FOLDER`")
        self.info = json.loads(info_path.read_text())
        self.clips = self.info["clips"]  # record "video" → file name

    @property
    def views(self):
        return int(self.info["views"])

    def skipped(self, record):
        """Why ``record``'s clip is not in the cache (unreadable when it was written), or None."""
        return self.info.get("skipped", {}).get(record["video"])

    def file_of(self, record):
        name = self.clips.get(record["video"])
        if name is None:
            raise FeatureCacheError(f"feature_cache {self.folder} holds no features of {record['video']}: it was "
                                    f"made from other annotations ({self.info.get('annotations')}); write it again "
                                    "for these with `video-llama cache-features`")
        return self.folder / name

    def read(self, record, rng=None):
        """(features, ClipInfo) of one view of ``record``'s clip: its (frames, query tokens, width)
        fp16 features and which frames they are of; a random view (from ``rng``, else ``random``)
        when the cache holds several."""
        from safetensors import safe_open

        from video_llama.processors.video_processors import ClipInfo

        view = (rng or random).randrange(self.views) if self.views > 1 else 0
        with safe_open(self.file_of(record), framework="pt") as stored:
            infos = json.loads(stored.metadata()[TENSOR])
            return stored.get_slice(TENSOR)[view], ClipInfo(**infos[view])

    def check_encoders(self, encoders, where="model"):
        """Refuse a model whose frozen encoders are not the ones the features came from."""
        made = self.info["encoders"]
        differ = {key: (made.get(key), value) for key, value in encoders.items() if made.get(key) != value}
        if differ:
            listing = ", ".join(f"{key}: cache {old!r}, {where} {new!r}" for key, (old, new) in differ.items())
            raise FeatureCacheError(f"feature_cache {self.folder} was made with other encoders ({listing}); write it "
                                    "again with this model (`video-llama cache-features`) or train from pixels")
