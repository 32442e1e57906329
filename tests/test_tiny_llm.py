from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_llm_reloads_and_tokenises(tiny_llm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    ids = tokenizer("What is the action shown in the displayed video? Fall down", add_special_tokens=False).input_ids
    assert len(ids) > 3 and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "What is the action shown in the displayed video? Fall down"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    assert model.config.vocab_size == len(tokenizer)
    logits = model(input_ids=__import__("torch").tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_tiny_llm_command_line(tmp_path):
    from video_llama.cli.main import main

    assert main(["tiny-llm", str(tmp_path / "llm")]) == 0
    assert (tmp_path / "llm" / "tokenizer.json").is_file() and (tmp_path / "llm" / "model.safetensors").is_file()
