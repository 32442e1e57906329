"""The one text path, shared by datasets, the model, the tasks and the demo: tokenizer loading,
prompt templates, conversation → ``input_ids``/``labels``, padding and batching."""

from video_llama.conversation.collate import collate_video_samples, pad_batch
from video_llama.conversation.templates import (
    GUIDE_QUESTION,
    IGNORE_INDEX,
    IMAGE_END,
    IMAGE_PATCH_TOKEN,
    IMAGE_START,
    VIDEO_END,
    VIDEO_START,
    Template,
    caption_ids,
    conversation_ids,
    get_template,
    load_questions,
    sound_and_video_placeholder,
    timestamp_sentence,
    truncate,
    video_placeholder,
)
from video_llama.conversation.tokenizer import load_prompts, load_tokenizer

__all__ = [
    "GUIDE_QUESTION", "IGNORE_INDEX", "IMAGE_END", "IMAGE_PATCH_TOKEN", "IMAGE_START", "VIDEO_END", "VIDEO_START", "Template", "caption_ids", "collate_video_samples", "conversation_ids",
    "get_template", "load_prompts", "load_questions", "load_tokenizer", "pad_batch", "sound_and_video_placeholder", "timestamp_sentence", "truncate", "video_placeholder",
]
