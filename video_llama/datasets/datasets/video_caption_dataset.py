"""Video-caption data in the WebVid CSV layout (``videoid``, ``name``, ``page_dir``).

Each caption becomes the answer to a prompt drawn at random from the prompt file (from the
global ``random``, which the training sampler seeds per sample), or, without a prompt file, follows
the video tokens directly (the original stage 1). Tokenised here, so that the training loop knows
every batch's answer tokens before the forward pass.
"""

import csv
import logging
import random

import torch

from video_llama.conversation import caption_ids
from video_llama.conversation.templates import caption_first_prompt
from video_llama.datasets.datasets.base_video_dataset import AnnotationError, BaseVideoDataset, annotation_files

logger = logging.getLogger(__name__)


def read_caption_csv(paths):
    records = []
    for path in annotation_files(paths):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"videoid", "name", "page_dir"} - set(reader.fieldnames or [])
                if missing:
                    raise AnnotationError(f"{path}: missing column(s) {sorted(missing)}; expected videoid,name,page_dir")
                for row in reader:
                    records.append({"video": f"{row['page_dir']}/{row['videoid']}.mp4", "caption": row["name"]})
        except UnicodeDecodeError as err:
            raise AnnotationError(f"{path} is not UTF-8 text ({err}); save it as UTF-8 CSV") from err
    return records


class VideoCaptionDataset(BaseVideoDataset):
    def __init__(self, records, videos_dir, vis_processor, text_processor, tokenizer, template, prompts,
                 prompt_template=None, num_video_query_token=32, max_txt_len=32, max_failed_ratio=0.1, name="webvid"):
        if not prompts:
            logger.info("%s: no prompt_path: each caption follows the video tokens directly, as the original "
                        "stage 1 without prompts", name)
        super().__init__(records, videos_dir, vis_processor, max_failed_ratio, name)
        self.text_processor = text_processor
        self.tokenizer, self.template, self.prompts = tokenizer, template, list(prompts)
        self.first_prompt = caption_first_prompt(prompt_template) if prompt_template else None
        self.num_video_query_token, self.max_txt_len = num_video_query_token, max_txt_len

    def make_sample(self, record, frames, info):
        caption = self.text_processor(record["caption"]) if self.text_processor else record["caption"]
        prompt = random.choice(self.prompts) if self.prompts else None
        input_ids, labels = caption_ids(self.tokenizer, self.template, prompt, caption,
                                        self.num_video_query_token, self.max_txt_len, self.first_prompt)
        return {"image": frames, "input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
                "text_input": caption, "video": record["video"]}
