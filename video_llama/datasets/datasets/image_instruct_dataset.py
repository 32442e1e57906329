"""Instruction data about images: the guide's format with ``image`` for ``video``, LLaVA-Instruct
(``{"image", "conversations": [{"from": "human" | "gpt", "value"}]}``) and the original's
``cc_sbu_align`` captions (``filter_cap.json`` + ``image/<image_id>.jpg``). Images are one-frame
videos to the model, with ``<Image>`` tags around their placeholder, as the original asks about them.
"""

from pathlib import Path

from video_llama.conversation import IMAGE_END, IMAGE_START
from video_llama.datasets.datasets.base_video_dataset import AnnotationError, annotation_files, load_json
from video_llama.datasets.datasets.image_caption_dataset import ImageSource
from video_llama.datasets.datasets.video_instruct_dataset import VISUAL_MARK, VideoInstructDataset


class ImageInstructDataset(ImageSource, VideoInstructDataset):
    placeholder_tags = (IMAGE_START, IMAGE_END)


def read_llava_annotations(paths, image_prefix=""):
    """LLaVA-Instruct JSON → instruction records: human/gpt turns paired into QA, ``<image>`` kept in
    the first question (the placeholder goes there), ``image_prefix`` before each file name."""
    records = []
    for path in annotation_files(paths):
        entries = load_json(path)
        if not isinstance(entries, list):
            raise AnnotationError(f"{path} must hold a JSON list of {{'image': ..., 'conversations': [...]}} entries")
        for i, entry in enumerate(entries):
            turns = entry.get("conversations") if isinstance(entry, dict) else None
            roles = [t.get("from") for t in turns] if isinstance(turns, list) and all(isinstance(t, dict) for t in turns) else None
            ok = isinstance(entry, dict) and isinstance(entry.get("image"), str) and roles and len(roles) % 2 == 0
            ok = ok and roles == ["human", "gpt"] * (len(roles) // 2) and all(isinstance(t.get("value"), str) for t in turns)
            if not ok:
                raise AnnotationError(f"{path}, entry {i}: expected {{'image': 'file.jpg', 'conversations': [{{'from': "
                                      f"'human', 'value': str}}, {{'from': 'gpt', 'value': str}}, ...]}}, got {entry!r:.200}")
            qa = [{"q": turns[k]["value"], "a": turns[k + 1]["value"]} for k in range(0, len(turns), 2)]
            qa[0]["q"] = qa[0]["q"] if VISUAL_MARK in qa[0]["q"] else f"{VISUAL_MARK}\n{qa[0]['q']}"
            for turn in qa[1:]:
                turn["q"] = turn["q"].replace(VISUAL_MARK, "").strip()  # one image, placed once
            records.append({"video": image_prefix + entry["image"], "QA": qa})
    return records


def read_cc_sbu_align(storage):
    """The original's cc_sbu_align folder → caption records ``{"video": "image/<id>.jpg", "caption"}``."""
    path = Path(storage) / "filter_cap.json"
    if not path.is_file():
        raise AnnotationError(f"build_info.storage: {storage} has no filter_cap.json; point it at the cc_sbu_align "
                              "folder (filter_cap.json + image/)")
    data = load_json(path)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise AnnotationError(f"{path} must hold {{'annotations': [{{'image_id': ..., 'caption': ...}}, ...]}}")
    records = []
    for i, item in enumerate(annotations):
        if not (isinstance(item, dict) and "image_id" in item and isinstance(item.get("caption"), str)):
            raise AnnotationError(f"{path}, annotation {i}: expected {{'image_id': ..., 'caption': str}}, got {item!r:.200}")
        records.append({"video": f"image/{item['image_id']}.jpg", "caption": item["caption"]})
    return records
