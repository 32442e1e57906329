"""Video-caption data in the WebVid CSV layout (``videoid``, ``name``, ``page_dir``)."""

import csv

from video_llama.datasets.datasets.base_video_dataset import AnnotationError, BaseVideoDataset, annotation_files


def read_caption_csv(paths):
    records = []
    for path in annotation_files(paths):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"videoid", "name", "page_dir"} - set(reader.fieldnames or [])
            if missing:
                raise AnnotationError(f"{path}: missing column(s) {sorted(missing)}; expected videoid,name,page_dir")
            for row in reader:
                records.append({"video": f"{row['page_dir']}/{row['videoid']}.mp4", "caption": row["name"]})
    return records


class VideoCaptionDataset(BaseVideoDataset):
    def __init__(self, records, videos_dir, vis_processor, text_processor, max_failed_ratio=0.1, name="webvid"):
        super().__init__(records, videos_dir, vis_processor, max_failed_ratio, name)
        self.text_processor = text_processor

    def make_sample(self, record, frames):
        return {"image": frames, "text_input": self.text_processor(record["caption"]), "video": record["video"]}
