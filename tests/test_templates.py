"""Label masks, token by token, for both templates."""

import pytest

from video_llama.conversation import (
    IGNORE_INDEX,
    caption_ids,
    conversation_ids,
    get_template,
    load_tokenizer,
    truncate,
    video_placeholder,
)
from video_llama.conversation.templates import caption_first_prompt


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    return load_tokenizer(str(tiny_llm_dir))


def ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def trained_runs(tok, input_ids, labels):
    """The stretches of tokens that are trained on, each decoded."""
    runs, run = [], []
    for token, label in zip(input_ids, labels):
        if label != IGNORE_INDEX:
            run.append(token)
        elif run:
            runs.append(tok.decode(run)), run.clear()
    return runs + [tok.decode(run)] if run else runs


def test_llama_v2_single_turn(tok):
    """The tiny tokenizer's folder declares <s> and </s> as plain strings (as transformers 5 writes
    them), so, as the original's tokenizer did with such a folder, the space before </s> goes; the
    text after <s> starts with SentencePiece's prefix space (tests/test_original_ids.py holds the
    original's own ids for both kinds of folder)."""
    input_ids, labels = conversation_ids(tok, get_template("llama_v2"), [("Which action?", "greet_mode")])
    assert tok.decode(input_ids) == "<s> [INST] <<SYS>>\n \n<</SYS>>\n\nWhich action? [/INST] greet_mode</s>"
    assert input_ids.count(tok.bos_token_id) == 1 and input_ids[0] == tok.bos_token_id
    assert trained_runs(tok, input_ids, labels) == ["greet_mode</s>"] and labels[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(input_ids[1:3]) == ["▁", "<0x5B>"]  # "▁[": the prefix after <s>


def test_llama_v2_multi_turn_trains_every_answer_and_repeats_bos(tok):
    """The original's LLAMA_2 text for two turns: "[INST] <<SYS>>\\n \\n<</SYS>>\\n\\nq one [/INST] a one
    </s><s>[INST] q two [/INST] a two </s>" after the one BOS its tokenizer adds."""
    input_ids, labels = conversation_ids(tok, get_template("llama_v2"), [("q one", "a one"), ("q two", "a two")])
    expected = "<s> [INST] <<SYS>>\n \n<</SYS>>\n\nq one [/INST] a one</s><s> [INST] q two [/INST] a two</s>"
    assert tok.decode(input_ids) == expected and input_ids.count(tok.bos_token_id) == 2
    assert trained_runs(tok, input_ids, labels) == ["a one</s>", "a two</s>"]


def test_vicuna_is_the_original_instruction_format(tok):
    """The text the original builds for two turns, written down from its rules:
    "\n\n###Human: q one\n###Assistant: a one\n###Human: q two\n###Assistant: a two\n###"; trained on
    each answer and the "\n###" after it."""
    turns = [("q one", "a one"), ("q two", "a two")]
    input_ids, labels = conversation_ids(tok, get_template("vicuna"), turns)
    text = tok.decode(input_ids[1:])
    assert text == "\n\n###Human: q one\n###Assistant: a one\n###Human: q two\n###Assistant: a two\n###"
    assert input_ids[0] == tok.bos_token_id and input_ids.count(tok.bos_token_id) == 1
    first_answer = labels.index(next(l for l in labels if l != IGNORE_INDEX))
    assert tok.decode(input_ids[1:first_answer]) == "\n\n###Human: q one\n###Assistant:"
    assert [r.strip() for r in trained_runs(tok, input_ids, labels)] == ["a one\n###", "a two\n###"]


def test_placeholder_is_one_token_each(tok):
    n = 32
    input_ids, _ = conversation_ids(tok, get_template("llama_v2"), [(video_placeholder(n) + " q", "a")])
    patch_id = tok.convert_tokens_to_ids("<ImageHere>")
    assert input_ids.count(patch_id) == n


def test_truncation_keeps_placeholder_and_an_answer(tok):
    n = 8
    patch_id = tok.convert_tokens_to_ids("<ImageHere>")
    input_ids, labels = conversation_ids(tok, get_template("llama_v2"), [(video_placeholder(n) + " q", "a long answer here")])
    first_answer = next(i for i, l in enumerate(labels) if l != IGNORE_INDEX)
    cut = truncate(input_ids, labels, first_answer + 1, patch_id, n)
    assert cut is not None and cut[1][-1] != IGNORE_INDEX and len(cut[0]) == first_answer + 1
    assert truncate(input_ids, labels, first_answer, patch_id, n) is None  # no answer token left
    assert truncate(input_ids, labels, 5, patch_id, n) is None  # would cut the placeholder
    assert truncate(input_ids, labels, 10_000, patch_id, n) == (input_ids, labels)


def test_caption_is_the_answer_to_the_prompt_and_max_txt_len_cuts_the_caption_only(tok):
    # the guide's single-quoted YAML keeps "\n" as two characters; the template means newlines
    first = caption_first_prompt('[INST] <<SYS>>\\n \\n<</SYS>>\\n\\n{} [/INST] ')
    template = get_template("llama_v2")
    input_ids, labels = caption_ids(tok, template, "<Image><ImageHere></Image> Describe it.", "a dog runs", 32, 50, first)
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == "a dog runs</s>"  # plain-string </s>: no space
    assert input_ids.count(tok.convert_tokens_to_ids("<ImageHere>")) == 32
    prompt = tok.decode([t for t, l in zip(input_ids, labels) if l == IGNORE_INDEX])
    assert "[INST] <<SYS>>\n \n<</SYS>>\n\n<Image>" in prompt and "\\n" not in prompt
    short_ids, short_labels = caption_ids(tok, template, "<ImageHere>", "a dog runs across the wide green field", 32, 2, first)
    assert sum(t != IGNORE_INDEX for t in short_labels) == 2  # stage-1's max_txt_len 32 never cuts the placeholders
    assert short_ids.count(tok.convert_tokens_to_ids("<ImageHere>")) == 32


def test_caption_without_a_prompt_follows_the_video_as_the_original_stage_1(tok):
    patch = tok.convert_tokens_to_ids("<ImageHere>")
    ids, labels = caption_ids(tok, get_template("llama_v2"), None, "a dog runs", 4, 32)
    assert ids[:5] == [tok.bos_token_id] + [patch] * 4 and labels[:5] == [IGNORE_INDEX] * 5
    assert tok.decode(ids[5:]) == "a dog runs</s>"  # the original: caption + end_sym, no space
    assert labels[5:] == ids[5:] and ids[-1] == tok.eos_token_id
    vicuna_ids, _ = caption_ids(tok, get_template("vicuna"), None, "a dog runs", 4, 32)
    assert tok.decode(vicuna_ids[5:]) == "a dog runs###"


def test_a_tokenizer_without_sentencepiece_prefix_encodes_the_whole_text_itself(tmp_path):
    """A byte-level BPE (not a tokenizer the original knew) keeps its own handling of special tokens
    and whitespace: the original's SentencePiece rules are not applied to it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from video_llama.conversation.segment_encoding import SegmentEncoder

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    corpus = ["What is the action? greet mode", "Human Assistant ###", "<s> </s> [INST] [/INST]"] * 20
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(tmp_path / "bpe")
    tokenizer = load_tokenizer(str(tmp_path / "bpe"))
    assert not SegmentEncoder.of(tokenizer).sentencepiece
    text = "[INST] What is the action? [/INST] greet mode </s>\n<s>[INST]"
    assert SegmentEncoder.of(tokenizer).encode(text)[0] == tokenizer(text, add_special_tokens=False).input_ids
    input_ids, labels = conversation_ids(tokenizer, get_template("llama_v2"), [("What is the action?", "greet mode")])
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == " greet mode </s>"  # the space kept
