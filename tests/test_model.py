import json

import pytest
import torch

import video_llama  # noqa: F401
from video_llama.common.registry import registry

from conftest import DATA_DIR, batch_of, build


def test_only_trainable_parts_learn_and_frozen_stay_bit_identical(tiny):
    cfg, dataset = tiny
    model = build(cfg)
    model.train()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable_before} == {
        "video_frame_position_embedding", "video_Qformer", "video_query_tokens", "llama_proj"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(dataset)
    for _ in range(2):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        for name, param in model.named_parameters():
            assert (param.grad is not None) == (name in trainable_before), name
        optimizer.step()
    assert all(torch.equal(p, frozen_before[n]) for n, p in model.named_parameters() if n in frozen_before)
    assert any(not torch.equal(p, trainable_before[n]) for n, p in model.named_parameters() if n in trainable_before)


def test_frozen_modules_stay_in_eval_mode(tiny):
    model = build(tiny[0])
    model.train()
    assert model.training and model.video_Qformer.training
    for name in ("visual_encoder", "ln_vision", "Qformer", "llama_model"):
        assert not getattr(model, name).training, name
        assert all(not m.training for m in getattr(model, name).modules()), name


def test_freezing_flags_are_honoured(tiny):
    model = build(tiny[0], "freeze_vit=false", "vit_precision=fp32", "frozen_video_Qformer=true", "frozen_llama_proj=true")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"visual_encoder", "ln_vision"}


def test_loss_only_on_answer_tokens(tiny):
    cfg, dataset = tiny
    model = build(cfg).eval()
    batch = batch_of(dataset)
    with torch.no_grad():
        out = model(batch)
    logits, labels = out["logits"][:, :-1], batch["labels"][:, 1:]
    mask = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    answers = [dataset.tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert answers == ["greet_mode</s>", "clean_mode</s>"]
    # with the effective batch's token count, the loss is this batch's token sum over that count
    with torch.no_grad():
        summed = model(batch, num_items_in_batch=100)["loss"]
    assert torch.allclose(summed * 100, expected * mask.sum(), atol=1e-4)


def test_vit_gradient_checkpointing_gives_the_same_gradients(tiny):
    cfg, dataset = tiny
    batch = batch_of(dataset)
    grads = []
    for checkpointing in (False, True):
        model = build(cfg, "freeze_vit=false", f"use_grad_checkpoint={checkpointing}")
        model.train()
        model(batch)["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if n.startswith("visual_encoder.")})
    assert model.visual_encoder.grad_checkpointing and grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_placeholder_count_is_checked(tiny):
    cfg, dataset = tiny
    model = build(cfg)
    batch = batch_of(dataset)
    patch_id = model.im_patch_token_id
    first = (batch["input_ids"][0] == patch_id).nonzero()[0, 0]
    batch["input_ids"][0, first] = dataset.tokenizer.unk_token_id
    with pytest.raises(ValueError, match=r"exactly 32 <ImageHere> placeholders.*\[31, 32\]"):
        model(batch)


def test_guide_keys_accepted_at_tiny_size(tiny):
    model = build(tiny[0], "num_query_token=32", "max_frame_pos=32", "img_size=224")
    assert model.query_tokens.shape[1] == 32 and model.video_frame_position_embedding.num_embeddings == 32
    assert model.visual_encoder.patch_embed.img_size == (224, 224)


@pytest.mark.parametrize("model_type, llm_width, reference, expected", [
    ("pretrain_llama_v2", 4096, "VL_7B", 22_104_064),
    ("pretrain_vicuna", 5120, "VL_13B", 22_891_520),
])
def test_full_size_on_meta_matches_published_trainable_part(model_type, llm_width, reference, expected):
    from video_llama.models.checkpoint import original_to_ours

    model_cls = registry.get_model_class("video_llama")
    cfg = model_cls.default_config(model_type)
    cfg.llama_hidden_size = llm_width
    cfg.vit_ckpt = cfg.q_former_model = "random"  # the published files are not here; sizes are what is tested
    with torch.device("meta"):
        model = model_cls.from_config(cfg, load_llm=False)
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    published = json.loads((DATA_DIR / "original_checkpoint_keys.json").read_text())[reference]
    mapped = {original_to_ours(n): tuple(s) for n, s in published.items() if original_to_ours(n)}
    assert trainable == mapped
    vit = sum(p.numel() for p in model.visual_encoder.parameters())
    assert len(list(model.visual_encoder.state_dict())) == 511 and abs(vit - 985.9e6) < 0.1e6


def test_from_scratch_settings_reach_the_modules(tiny):
    cfg, _ = tiny
    model = build(cfg, "vit_pos_embed_std=1.0", "qformer_dropout=0.0", "frame_pos_embed_std=0.5")
    assert 0.7 < model.visual_encoder.pos_embed.std().item() < 1.1  # truncated at 2 std
    assert model.Qformer.config.attention_probs_dropout_prob == 0.0 == model.video_Qformer.config.hidden_dropout_prob
    assert 0.4 < model.video_frame_position_embedding.weight.std().item() < 0.6
    default = build(cfg, "vit_pos_embed_std=null", "qformer_dropout=0.1", "frame_pos_embed_std=null")
    assert default.visual_encoder.pos_embed.std().item() < 0.05  # timm's 0.02
    assert default.Qformer.config.attention_probs_dropout_prob == 0.1
    assert 0.8 < default.video_frame_position_embedding.weight.std().item() < 1.2  # PyTorch's N(0, 1)
