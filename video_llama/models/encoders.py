"""The vision encoder (timm's EVA) and Q-Formers (transformers' BLIP-2 Q-Former), sized from the
``model:`` config. Both use the original parameter layout, so published weights load by a plain
rename (see checkpoint.py). timm and transformers are imported on use: they are slow to import and
most commands never build a model."""

import torch.nn as nn


def build_eva_vit(cfg):
    """EVA ViT as in BLIP-2: no class head, no final norm (``ln_vision`` follows it)."""
    from timm.models.eva import Eva

    vit = Eva(
        img_size=cfg.img_size,
        patch_size=cfg.vit_patch_size,
        embed_dim=cfg.vit_embed_dim,
        depth=cfg.vit_depth,
        num_heads=cfg.vit_num_heads,
        mlp_ratio=cfg.vit_mlp_ratio,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
        use_post_transformer_norm=False,
        use_fc_norm=False,
        init_values=None,
        drop_path_rate=cfg.drop_path_rate,
    )
    if cfg.init_std:
        for module in vit.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=cfg.init_std)
    if cfg.vit_pos_embed_std:
        std = cfg.vit_pos_embed_std
        nn.init.trunc_normal_(vit.pos_embed, std=std, a=-2 * std, b=2 * std)
    return vit


def build_qformer(cfg, num_layers, encoder_width, cross_attention_freq):
    """Query-only Q-Former (no text embeddings or text feed-forward), as Video-LLaMA uses it."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    config = Blip2QFormerConfig(
        hidden_size=cfg.qformer_hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=cfg.qformer_num_heads,
        intermediate_size=cfg.qformer_intermediate_size,
        encoder_hidden_size=encoder_width,
        cross_attention_frequency=cross_attention_freq,
        use_qformer_text_input=False,
        hidden_dropout_prob=cfg.qformer_dropout,
        attention_probs_dropout_prob=cfg.qformer_dropout,
        initializer_range=cfg.init_std or 0.02,
    )
    return Blip2QFormerModel(config)
