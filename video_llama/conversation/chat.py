"""A conversation about one video or image with a model: what ``demo.py`` (terminal and web) and
``video-llama infer`` talk through.

The model is asked exactly as it was trained: its own prompt builder (``VideoLLAMA.prompt_ids``)
with the video placeholder opening the first question and, when the model learned with it, the
timestamp sentence of the sampled frames before that question. ``prompt_style="original_demo"``
asks as the original's demo did instead (its system prompt and separators, and a second space
before the first question), to compare answers with it; its models were trained on the former.
A long conversation drops its oldest turns, never the video tokens, to stay within
``max_context`` positions (the original demo kept the last 2000 positions, which can cut the
video off).

A model with the audio branch also hears the clip: its soundtrack, or a separate sound file, goes
to the audio branch and the first question opens with the original demo's sentence about sound and
sight (audio tokens first); a clip without sound is answered from its frames alone, and
``Visual.hearing`` says which it was.
"""

import logging
import threading
from dataclasses import dataclass, field

import torch

from video_llama.conversation.templates import original_demo_template, timestamp_sentence

logger = logging.getLogger(__name__)

# The original web demo's defaults; `--question` and batch inference are greedy (reproducible).
WEB_DEFAULTS = {"max_new_tokens": 300, "num_beams": 1, "do_sample": True, "temperature": 1.0, "top_p": 0.9,
                "repetition_penalty": 1.0}
GREEDY = {"max_new_tokens": 300, "num_beams": 1, "do_sample": False, "repetition_penalty": 1.0}
PROMPT_STYLES = ("training", "original_demo")


class ChatError(ValueError):
    """Something the person chatting can fix (no video yet, a question too long); shown as is."""


@dataclass
class Visual:
    """What the conversation is about: processed frames (C, T, H, W) or an image (C, H, W)."""

    frames: torch.Tensor
    name: str
    note: str = ""  # the timestamp sentence put before the first question
    warning: str = ""  # why answers about it may be unreliable (a clip shorter than the frames sampled)
    sound: torch.Tensor = None  # (clips, 1, mel, time) filterbanks, for a model with the audio branch
    hearing: str = ""  # whether the answers hear it: "" for a model without the audio branch

    @property
    def is_image(self):
        return self.frames.dim() == 3


def video_visual(vis_processor, path, timestamps=True):
    """The clip at ``path`` as the model sees it: its processed frames, with ``timestamps`` the
    sentence naming the sampled frames' times, and a warning when the clip has fewer frames than
    the processor samples (raises VideoDecodeError naming the file)."""
    frames = vis_processor(path)
    info = vis_processor.clip_info(path) if hasattr(vis_processor, "clip_info") else None
    note = timestamp_sentence(info.shown_indices, info.fps) if timestamps and info is not None else ""
    warning = short_clip_warning(path, info) if info is not None and info.is_short else ""
    return Visual(frames, str(path), note, warning)


def hear(visual, sound_processor, sound_path=None):
    """Give ``visual`` its sound (its file's soundtrack, or ``sound_path``'s) when the model has the
    audio branch (a ``sound_processor``); without sound it is answered from the frames, and
    ``visual.hearing`` says which (logged once)."""
    if sound_processor is None:
        if sound_path:
            raise ChatError(f"this model has no audio branch (model.equip_audio_branch) to hear {sound_path}")
        return visual
    visual.sound = sound_processor(sound_path or visual.name)
    if visual.sound is None and sound_path:
        raise ChatError(f"no sound to hear in {sound_path}: {sound_processor.last_reason}")
    if visual.sound is None:
        visual.hearing = f"no sound ({sound_processor.last_reason}): answering from the frames alone"
        logger.warning("%s", visual.hearing)
    else:
        visual.hearing = f"hearing {sound_path or 'the soundtrack'} ({len(visual.sound)} clips of 2 s)"
    return visual


def short_clip_warning(path, info):
    """The warning for a clip with fewer frames than the processor samples: some frames repeat,
    so the model sees less motion than it learned from."""
    sampled = len(info.indices)
    return (f"{path} has {info.num_frames} frame{'s' if info.num_frames != 1 else ''}, fewer than the {sampled} the "
            f"model samples: frames repeat, the answer may be unreliable (a clip of {sampled} frames or more avoids it)")


@dataclass
class Chat:
    """``upload_video``/``upload_image``, then ``ask`` (or ``stream``) as often as wanted;
    ``reset`` starts over. ``history`` holds the (question, answer) turns so far."""

    model: object
    vis_processor: object  # video: path → (C, T, H, W) floats, with clip_info
    image_processor: object = None  # image path → (C, H, W) floats
    timestamps: bool = True  # put the frame-times sentence before the first question (as trained)
    max_context: int = 2000
    visual: Visual = None
    history: list = field(default_factory=list)
    prompt_style: str = "training"  # or "original_demo" (PROMPT_STYLES; see the module's docstring)
    sound_processor: object = None  # path → filterbanks or None (no sound; why: ``last_reason``); audio branch only

    def __post_init__(self):
        if self.prompt_style not in PROMPT_STYLES:
            raise ChatError(f"prompt style {self.prompt_style!r} is not one of {PROMPT_STYLES}")

    @property
    def template(self):
        """The template to ask in: None (the model's) or the original demo's, which drops its system
        prompt for a clip with sound."""
        if self.prompt_style != "original_demo":
            return None
        return original_demo_template(self.model.template, sound=self.visual is not None and self.visual.sound is not None)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def reset(self):
        self.visual, self.history = None, []

    def upload_video(self, path, sound_path=None):
        """Decode ``path`` (raises VideoDecodeError naming it) and start a conversation about it;
        a model with the audio branch hears its soundtrack, or ``sound_path`` instead."""
        visual = video_visual(self.vis_processor, path, self.timestamps)
        hear(visual, self.sound_processor, sound_path)
        self.visual, self.history = visual, []

    def upload_image(self, path):
        """Read an image file (the processor raises VideoDecodeError naming it) and start a
        conversation about it."""
        if self.image_processor is None:
            raise ChatError("this chat has no image processor; start it with one to talk about images")
        self.visual, self.history = Visual(self.image_processor(path), str(path)), []

    def _turns(self, question, max_new_tokens):
        """(history to send, question to send): the oldest turns dropped until the prompt and the
        answer fit ``max_context``; the timestamp sentence goes before the first turn sent."""
        if self.visual is None:
            raise ChatError("upload a video or an image first")
        note = self.visual.note + (" " if self.template else "")  # the demo: first message, a space, question
        if self.template and self.visual.sound is not None:  # its message about sound had no timestamps
            note = ""
        for start in range(len(self.history) + 1):
            kept = self.history[start:]
            if kept:
                history, current = [(note + kept[0][0], kept[0][1]), *kept[1:]], question
            else:
                history, current = [], note + question
            length = len(self.model.prompt_ids(current, history, self.visual.is_image, self.template,
                                               sound=self.visual.sound is not None))
            if length + max_new_tokens <= self.max_context:
                return history, current
        raise ChatError(f"the question takes {length} positions, with max_new_tokens={max_new_tokens} more than "
                        f"max_context={self.max_context}; ask a shorter one or lower max_new_tokens")

    def _generate(self, history, question, settings, streamer=None):
        frames = self.visual.frames.unsqueeze(0).to(self.device)
        sound = self.visual.sound.unsqueeze(0).to(self.device) if self.visual.sound is not None else None
        settings = dict(settings)
        max_new_tokens = settings.pop("max_new_tokens")
        if not settings.get("do_sample"):  # greedy or beams: sampling settings do not apply
            for key in ("temperature", "top_p"):
                settings.pop(key, None)
        with torch.inference_mode():
            return self.model.generate(frames, [question], max_new_tokens, histories=[history], template=self.template,
                                       sound=sound, streamer=streamer, **settings)[0]

    def ask(self, question, **settings):
        """The answer to ``question`` (greedy unless ``settings`` say otherwise), added to the history."""
        settings = {**GREEDY, **settings}
        history, current = self._turns(question, settings["max_new_tokens"])
        answer = self._generate(history, current, settings)
        self.history.append((question, answer))
        return answer

    def stream(self, question, **settings):
        """Yield the answer so far as its tokens come (``WEB_DEFAULTS`` unless ``settings`` say
        otherwise); the full answer is added to the history at the end."""
        from transformers import TextIteratorStreamer

        settings = {**WEB_DEFAULTS, **settings}
        history, current = self._turns(question, settings["max_new_tokens"])
        tokenizer = self.model.llama_tokenizer
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = {}

        def run():
            try:
                result["answer"] = self._generate(history, current, settings, streamer)
            except BaseException as err:  # re-raised below; the stream must still end
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        text, end_sym = "", (self.template or self.model.template).end_sym
        for piece in streamer:
            text += piece
            yield text.split(end_sym)[0].strip()
        worker.join()
        if "error" in result:
            raise result["error"]
        self.history.append((question, result["answer"]))
        yield result["answer"]
