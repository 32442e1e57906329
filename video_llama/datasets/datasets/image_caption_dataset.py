"""Image-caption data in WebDataset tars, as the original's ``cc_sbu`` and ``laion`` read them:
``<key>.jpg`` (or png/jpeg/webp) with its caption in ``<key>.txt`` or ``<key>.json``'s
``caption`` (img2dataset's layout). Images are one-frame videos to the model; the caption is
tokenised as a video caption is (``VideoCaptionDataset``), and an unreadable image is skipped and
counted like an unreadable clip.
"""

import json

from video_llama.datasets.datasets.video_caption_dataset import VideoCaptionDataset
from video_llama.processors.image_processors import IMAGE_EXTENSIONS, load_image

IMAGE_MEMBERS = tuple(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))  # a sample's image: <key>.jpg, ...


class ImageSource:
    """For a dataset of images: the visual is an image file or bytes through an image processor."""

    def read_visual(self, source, rng=None):  # an image has no window to cut
        return self.vis_processor(load_image(source)), None, None


class ImageCaptionDataset(ImageSource, VideoCaptionDataset):
    """Image captions, from shards (``cc_sbu``, ``laion``) or records (``cc_sbu_align``)."""

    def from_stored(self, stored, where):
        member = next((ext for ext in IMAGE_MEMBERS if ext in stored), None)
        caption = stored["txt"].decode("utf-8").strip() if "txt" in stored else None
        if caption is None and "json" in stored:
            caption = json.loads(stored["json"]).get("caption")
        if member is None or not caption:
            return self.unusable(where, f"a sample needs an image ({'/'.join(IMAGE_MEMBERS)}) and a caption "
                                         f"(.txt or .json's caption); it has {sorted(k for k in stored if not k.startswith('__'))}")
        return self.decode({"video": where, "caption": caption}, stored[member], where=where)

