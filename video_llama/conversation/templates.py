"""Prompt templates (llama_v2, vicuna) and the one function that turns a conversation into
``input_ids`` and ``labels``.

A conversation is written out as the original wrote it, special tokens as text, and tokenised as
its tokenizer did (``segment_encoding``), so the published models get the ids they were trained on
(tested against ids the original built). The label mask is exact: -100 on every prompt token, the
answer tokens and what ends them kept. The same function builds prompts at inference (an answer of
None; ``VideoLLAMA.conversation``), so a model is asked exactly the way it was trained.

llama_v2 (LLaMA-2-chat), after one BOS::

    [INST] <<SYS>>\\n \\n<</SYS>>\\n\\n{placeholder} {q1} [/INST] {a1} </s><s>[INST] {q2} [/INST] {a2} </s>

vicuna (the original's instruction format: an empty system line, then ``\\n\\n``), after one BOS::

    \\n\\n###Human: {placeholder} {q1}\\n###Assistant: {a1}\\n###Human: {q2}\\n###Assistant: {a2}\\n###

Trained on: each answer and what ends it (`` {a} </s>`` / `` {a}\\n###``). The original's masks
drift by a token per turn where it measured turns apart (vicuna; llama_v2 with special tokens
declared as plain strings); those tokens are prompt and are masked here (``docs/checkpoints.md``).
Caption data keeps the original's one-line form (``caption_prompt``).
"""

from dataclasses import dataclass, replace
from pathlib import Path

from video_llama.common.config import PROMPTS_DIR
from video_llama.common.registry import RegistryError, registry
from video_llama.conversation.segment_encoding import SegmentEncoder

IGNORE_INDEX = -100
IMAGE_PATCH_TOKEN = "<ImageHere>"
VIDEO_START, VIDEO_END = "<Video>", "</Video>"
IMAGE_START, IMAGE_END = "<Image>", "</Image>"


def load_questions(path):
    """The questions of a question file: one per line, ``#`` lines are comments."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


# The guide's question (the quickstart trains with its file), which select-mode and infer ask when
# not told otherwise: a model answers best the question it learnt.
GUIDE_QUESTION = load_questions(PROMPTS_DIR / "action_question_guide.txt")[0]


@dataclass(frozen=True)
class Template:
    """How one LLM family was trained to converse. Registered by name (``model.template``);
    a plugin registers its own with ``registry.register_template(name)(Template(...))``."""

    name: str
    first_prompt: str  # format with {q}; the first turn carries the system part
    next_prompt: str
    answer: str  # format with {a}; the end symbol is appended as tokens
    end_sym: str  # the text that ends an answer (model.end_sym in the original configs)
    end_is_eos: bool  # the end symbol is the tokenizer's EOS token, not text to tokenise
    bos_every_turn: bool
    marker: str  # text every prompt of this template contains (to recognise a prompt_template)
    caption_prompt: str  # the first turn of caption data (model.prompt_template's default), with {q}


LLAMA_V2 = registry.register_template("llama_v2")(Template(
    name="llama_v2",
    first_prompt="[INST] <<SYS>>\n \n<</SYS>>\n\n{q} [/INST]",
    next_prompt="[INST] {q} [/INST]",
    answer=" {a} ",
    end_sym="</s>",
    end_is_eos=True,
    bos_every_turn=True,
    marker="[INST]",
    caption_prompt="[INST] <<SYS>>\n \n<</SYS>>\n\n{q} [/INST]",
))
VICUNA = registry.register_template("vicuna")(Template(
    name="vicuna",
    first_prompt="\n\n###Human: {q}\n###Assistant:",
    next_prompt="Human: {q}\n###Assistant:",  # the previous answer's end symbol brought the "\n###"
    answer=" {a}\n",
    end_sym="###",
    end_is_eos=False,
    bos_every_turn=False,
    marker="###Human",
    caption_prompt="###Human: {q} ###Assistant:",
))


# The prompts of the original's demo (conversation_video.py), which differ from what its models were
# trained on: llama_v2 with a long system prompt, vicuna without the "\n\n" header and newlines.
# ``Chat(prompt_style="original_demo")`` asks in these, for comparing answers with the original demo.
DEMO_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
               "that the user provides, and assist the user with a variety of tasks using natural language.")
ORIGINAL_DEMO = {
    "llama_v2": Template(
        name="llama_v2_demo", first_prompt="[INST] <<SYS>>\n" + DEMO_SYSTEM + "\n<</SYS>>\n\n{q} [/INST]",
        next_prompt="[INST] {q} [/INST]", answer=" {a} ", end_sym="</s>", end_is_eos=True, bos_every_turn=True,
        marker="[INST]", caption_prompt=LLAMA_V2.caption_prompt),
    "vicuna": Template(
        name="vicuna_demo", first_prompt="###Human: {q}###Assistant:", next_prompt="Human: {q}###Assistant:",
        answer=" {a}", end_sym="###", end_is_eos=False, bos_every_turn=False, marker="###Human",
        caption_prompt=VICUNA.caption_prompt),
}


# With sound the original demo empties its system prompt (vicuna's was empty already).
ORIGINAL_DEMO_SOUND = {**ORIGINAL_DEMO, "llama_v2": replace(
    ORIGINAL_DEMO["llama_v2"], name="llama_v2_demo_sound", first_prompt="[INST] <<SYS>>\n\n<</SYS>>\n\n{q} [/INST]")}


def original_demo_template(template, sound=False):
    """The template the original demo chatted in for models trained with ``template`` (about a
    clip with ``sound``: the one it used then)."""
    if template.name not in ORIGINAL_DEMO:
        raise ValueError(f"the original demo had no prompt for the {template.name!r} template; "
                         f"use prompt_style 'training' (the original's demo knew {sorted(ORIGINAL_DEMO)})")
    return (ORIGINAL_DEMO_SOUND if sound else ORIGINAL_DEMO)[template.name]


def get_template(name):
    """The registered template ``name`` (an error lists the known ones)."""
    return registry.get_template(name)


def template_in_config(name, key, problems):
    """The registered template a config names at ``key`` (None when it names none); a name that is
    not registered adds a problem for the config loader."""
    if name is None:
        return None
    try:
        return registry.get_template(name)
    except RegistryError as err:
        problems.append(f"{key}: {err}")
        return None


def caption_first_prompt(prompt_template):
    """A caption prompt template as the original configs write it (``'... {} [/INST] '``, with a
    literal ``\\n`` in single-quoted YAML) → the ``{q}`` form that :func:`conversation_ids` takes."""
    return prompt_template.replace("\\n", "\n").replace("{}", "{q}").rstrip()


def video_placeholder(num_tokens, start=VIDEO_START, end=VIDEO_END):
    return start + IMAGE_PATCH_TOKEN * num_tokens + end


# The original demo's first message about a clip with sound, character for character (its string
# continues over three source lines, so each break keeps the next line's 16 spaces of indentation).
SOUND_PROMPT = ("Close your eyes, open your ears and you imagine only based on the sound that: {audio}. "
                + " " * 16 + "Close your ears, open your eyes and you see that {video}.  "
                + " " * 16 + "Now answer my question based on what you have just seen and heard.")


def sound_and_video_placeholder(audio_tokens, video_tokens):
    """The opening of a question about a clip and its sound: the audio placeholders, then the video's."""
    return SOUND_PROMPT.format(audio=IMAGE_PATCH_TOKEN * audio_tokens, video=video_placeholder(video_tokens))


def _ids(tokenizer, text):
    return SegmentEncoder.of(tokenizer).encode(text)[0]


def conversation_text(tokenizer, template, turns, first_prompt=None):
    """(the conversation's text, the character spans of its answers, each with what ends it): the
    string the original tokenised, special tokens written as text. ``turns`` and ``first_prompt``
    as :func:`conversation_ids`."""
    end = tokenizer.eos_token if template.end_is_eos else template.end_sym
    text, spans = "", []
    for i, (question, answer) in enumerate(turns):
        if i > 0 and template.bos_every_turn:
            text += tokenizer.bos_token
        text += ((first_prompt or template.first_prompt) if i == 0 else template.next_prompt).format(q=question)
        if answer is None:
            break
        start = len(text)
        text += template.answer.format(a=answer) + end
        spans.append((start, len(text)))
    return text, spans


def conversation_ids(tokenizer, template, turns, bos=True, first_prompt=None):
    """``turns``: [(question, answer), ...], the placeholder already in the first question.
    ``first_prompt`` (with ``{q}``) replaces the template's first turn, e.g. model.prompt_template.

    The text is tokenised as the original's tokenizer did (``segment_encoding``); a token is
    trained when it starts inside an answer (the answer and what ends it).

    Returns (input_ids, labels) as lists; an answer of None ends the ids at the answer's start.
    """
    text, spans = conversation_text(tokenizer, template, turns, first_prompt)
    input_ids, starts = SegmentEncoder.of(tokenizer).encode(text)
    labels = [token if any(s <= at < e for s, e in spans) else IGNORE_INDEX for token, at in zip(input_ids, starts)]
    if bos:
        input_ids, labels = [tokenizer.bos_token_id] + input_ids, [IGNORE_INDEX] + labels
    return input_ids, labels


def truncate(input_ids, labels, max_len, placeholder_id, num_placeholders):
    """Cut to ``max_len`` from the right; None when that would cut the placeholder or leave no
    answer token (the caller reports and leaves out such a sample)."""
    input_ids, labels = input_ids[:max_len], labels[:max_len]
    if input_ids.count(placeholder_id) != num_placeholders:
        return None
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return input_ids, labels


def timestamp_sentence(indices, fps):
    """The sentence the original instruction data puts between the video and the first question,
    e.g. ``The video contains 8 frames sampled at 0.0, 1.2, 2.5 seconds. `` (seconds = index / fps,
    rounded to 0.1). Empty when the frame rate is unknown."""
    if not indices or not fps:
        return ""
    seconds = ", ".join(str(round(index / fps, 1)) for index in indices)
    return f"The video contains {len(indices)} frames sampled at {seconds} seconds. "


def caption_ids(tokenizer, template, prompt, caption, num_video_query_token, max_txt_len, first_prompt=None):
    """Caption data: ``caption`` as the answer to ``prompt`` (a line of a prompt file, with one
    <ImageHere> that becomes the video's placeholder tokens). As in the original, ``max_txt_len``
    limits the caption's tokens, never the prompt and its placeholders. Without a prompt (the
    original stage 1 without prompt_path) the caption follows the video tokens directly:
    ``<s>`` + placeholders + caption + end symbol."""
    if prompt is None:
        if template.end_is_eos:
            target = _ids(tokenizer, caption)[:max_txt_len] + [tokenizer.eos_token_id]
        else:
            target = _ids(tokenizer, caption + template.end_sym)[:max_txt_len]
        patch_id = tokenizer.convert_tokens_to_ids(IMAGE_PATCH_TOKEN)
        prefix = [tokenizer.bos_token_id] + [patch_id] * num_video_query_token
        return prefix + target, [IGNORE_INDEX] * len(prefix) + target
    prompt = prompt.replace(IMAGE_PATCH_TOKEN, IMAGE_PATCH_TOKEN * num_video_query_token)
    input_ids, labels = conversation_ids(tokenizer, template, [(prompt, caption)], first_prompt=first_prompt)
    keep = labels.count(IGNORE_INDEX) + max_txt_len
    return input_ids[:keep], labels[:keep]
