"""Token-exact with the original Video-LLaMA: the ids, labels and attention masks its data path built
for instruction samples (tests/data/original_ids/, produced by running the original code; its
README has the rules), rebuilt here from the same records with the same tokenizer folders."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from video_llama.conversation import IGNORE_INDEX, get_template, load_tokenizer, pad_batch

REFERENCE = Path(__file__).parent / "data" / "original_ids"
TEMPLATES = ("llama_v2", "vicuna")
LAYOUTS = ("addedtoken", "str")


def reference(template):
    return json.loads((REFERENCE / f"{template}.json").read_text())


@pytest.fixture(scope="module", params=[(t, layout) for t in TEMPLATES for layout in LAYOUTS], ids="-".join)
def case(request):
    template, layout = request.param
    ref = reference(template)
    tokenizer = load_tokenizer(str(REFERENCE / ref["settings"]["tokenizer_dirs"][layout]))
    assert tokenizer.convert_tokens_to_ids("<ImageHere>") == ref["settings"]["placeholder_id"]
    return template, layout, ref, tokenizer


def our_sample(sample, template, tokenizer, tmp_path):
    """(input_ids, labels) of a reference record as our datasets tokenise it."""
    from video_llama.datasets.datasets.image_instruct_dataset import ImageInstructDataset, read_llava_annotations
    from video_llama.datasets.datasets.video_instruct_dataset import VideoInstructDataset

    settings = dict(template=get_template(template), num_video_query_token=32, max_seq_len=512)
    if sample["kind"] == "image":  # a LLaVA record, read as a user's file is read
        anno = tmp_path / f"{sample['name']}.json"
        anno.write_text(json.dumps([{"image": "dog.jpg", "conversations": sample["conversations"]}]))
        qa, dataset = read_llava_annotations(anno)[0]["QA"], ImageInstructDataset([], None, None, tokenizer, **settings)
    else:
        qa, dataset = sample["QA"], VideoInstructDataset([], None, None, tokenizer, **settings)
    note = sample["timestamp_sentence"] if sample["kind"] == "video" else ""  # video_cn: the original has none
    tokens = dataset.tokenize(qa, 512, note)
    return tokens["input_ids"], tokens["labels"]


def the_originals_drift(input_ids, labels, bos_id):
    """Our (correct) llama_v2 mask → the original's with plain-string special tokens: it measured
    each round on the round's own text, so in round k (from 0) the first k tokens of the round are
    trained and the first k answer tokens are not (README rule 6)."""
    drifted = list(labels)
    starts = [0] + [i for i, token in enumerate(input_ids) if token == bos_id and i > 0]  # each round's <s>
    for k, (start, end) in enumerate(zip(starts, starts[1:] + [len(input_ids)])):
        for i in range(start, start + k):
            drifted[i] = input_ids[i]
        for i in [i for i in range(start, end) if labels[i] != IGNORE_INDEX][:k]:
            drifted[i] = IGNORE_INDEX
    return drifted


def test_instruction_samples_match_the_original_token_for_token(case, tmp_path):
    template, layout, ref, tokenizer = case
    batches = defaultdict(list)
    for sample in ref["samples"]:
        want = sample["layouts"][layout]
        input_ids, labels = our_sample(sample, template, tokenizer, tmp_path)
        assert input_ids == want["input_ids"][:want["length"]], sample["name"]
        if template == "vicuna":  # the original's mask drifts per turn; ours trains the answers alone
            assert labels == want["answer_labels"][:want["length"]], sample["name"]
        elif layout == "str":
            assert the_originals_drift(input_ids, labels, tokenizer.bos_token_id) == want["labels"][:want["length"]], sample["name"]
        else:
            assert labels == want["labels"][:want["length"]], sample["name"]
        batches[want["batch"]].append((want["row"], {"input_ids": input_ids, "labels": labels}, want))
    for rows in batches.values():  # padded as the original's collater padded each batch
        rows.sort(key=lambda row: row[0])
        batch = pad_batch([item for _, item, _ in rows], tokenizer.pad_token_id)
        for (_, _, want), input_ids, attention_mask in zip(rows, batch["input_ids"], batch["attention_mask"]):
            assert input_ids.tolist() == want["input_ids"] and attention_mask.tolist() == want["attention_mask"]


def test_truncated_samples_are_cut_with_their_bos_and_no_end_added(case, tmp_path):
    template, layout, ref, tokenizer = case
    sample = next(s for s in ref["samples"] if s["name"].endswith("truncated"))
    input_ids, _ = our_sample(sample, template, tokenizer, tmp_path)
    assert len(input_ids) == ref["settings"]["max_length"] and input_ids[0] == tokenizer.bos_token_id
    assert input_ids[-1] != tokenizer.eos_token_id


class PromptOnly:
    """The part of VideoLLAMA that builds prompts, over the reference's tokenizer (no weights)."""

    from video_llama.models.video_llama import VideoLLAMA

    conversation, prompt_ids = VideoLLAMA.conversation, VideoLLAMA.prompt_ids
    num_video_query_token = num_visual_tokens = 32

    def __init__(self, tokenizer, template):
        self.llama_tokenizer, self.template = tokenizer, get_template(template)


def test_chat_in_the_original_demos_style_asks_with_its_ids(case):
    import torch

    from video_llama.conversation.chat import Chat, Visual
    from video_llama.conversation.templates import conversation_text

    template, layout, ref, tokenizer = case
    placeholder = ref["settings"]["placeholder"]
    for prompt in ref["chat"]:
        want = prompt["layouts"][layout]
        chat = Chat(PromptOnly(tokenizer, template), vis_processor=None, prompt_style="original_demo")
        image = prompt["visual"] == "image"
        chat.visual = Visual(torch.zeros(3, 4, 4) if image else torch.zeros(3, 8, 4, 4), "x", prompt["timestamp_sentence"])
        chat.history = [tuple(turn) for turn in prompt["history"]]
        history, question = chat._turns(prompt["question"], max_new_tokens=0)
        input_ids = chat.model.prompt_ids(question, history, image, chat.template)
        assert input_ids == want["input_ids"], prompt["name"]
        start, end = want["placeholder_run"]
        assert set(input_ids[start:end]) == {ref["settings"]["placeholder_id"]} and input_ids.count(input_ids[start]) == 32
        tags = ("<Image>", "</Image>") if image else ("<Video>", "</Video>")
        turns = [*history, (question, None)]
        turns[0] = (f"{tags[0]}{placeholder}{tags[1]} {turns[0][0]}", turns[0][1])  # the demo's one placeholder
        text, _ = conversation_text(tokenizer, chat.template, turns)
        assert text == want["prompt_text"], prompt["name"]


def test_chat_asks_as_the_model_was_trained_by_default(case):
    import torch

    from video_llama.conversation.chat import Chat, Visual

    template, _, ref, tokenizer = case
    chat = Chat(PromptOnly(tokenizer, template), vis_processor=None)
    chat.visual = Visual(torch.zeros(3, 8, 4, 4), "x", ref["settings"]["timestamp_sentence"])
    history, question = chat._turns("What is happening?", max_new_tokens=0)
    asked = chat.model.prompt_ids(question, history)
    trained, _ = our_sample({"kind": "video", "name": "x", "timestamp_sentence": ref["settings"]["timestamp_sentence"],
                             "QA": [{"q": "What is happening?", "a": "A boat."}]}, template, tokenizer, None)
    assert trained[:len(asked)] == asked  # the training sample begins with exactly the prompt
