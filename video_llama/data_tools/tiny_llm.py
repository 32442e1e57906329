"""A tiny random-weight LLaMA and its tokenizer, for CPU runs (``video-llama tiny-llm OUT_DIR``).

The tokenizer is a real SentencePiece model (byte fallback, ``<unk>``/``<s>``/``</s>``) trained on
the project's prompts and a little English, converted to a fast tokenizer and saved with
``save_pretrained`` so that ``AutoTokenizer``/``AutoModelForCausalLM`` reload it like any model.
"""

import io
import tempfile
from pathlib import Path

from video_llama.common.config import PROMPTS_DIR



# The prompt files the tokenizer learns from, named once: a prompt file added later must not change
# the tiny tokenizer. Its merges decide how the labels and the question tokenise, and the from-scratch
# quickstart is sensitive to that: when image_questions.txt joined the corpus, held-out top-1 fell
# from 0.96 to 0.55 with nothing else changed (measured).
CORPUS_PROMPTS = ("action_question_guide.txt", "action_questions.txt", "alignment_image.txt", "alignment_video.txt")


def corpus_lines():
    files = [Path(__file__).with_name("tiny_llm_corpus.txt"), *(PROMPTS_DIR / name for name in CORPUS_PROMPTS)]
    lines = []
    for f in files:
        lines += [line.strip() for line in f.read_text().splitlines() if line.strip()]
    return lines


def train_sentencepiece(vocab_size=600):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,  # any text tokenises, even characters never seen in the corpus
        hard_vocab_limit=False,
        character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def write_tiny_llm(out_dir, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, seed=0):
    """Write the tokenizer and a randomly initialised ``LlamaForCausalLM`` to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(train_sentencepiece())
        (Path(tmp) / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        tie_word_embeddings=False,
        # 0.02 suits 4096-wide layers; at toy widths it makes every input look alike at the start
        initializer_range=hidden_size**-0.5,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir
