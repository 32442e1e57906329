"""Batching: pad token sequences on the right (labels with -100), stack frames."""

import torch
from torch.utils.data import default_collate

from video_llama.conversation.templates import IGNORE_INDEX


def pad_batch(items, pad_token_id):
    """[{input_ids, labels}] (lists or 1-D tensors) → padded ``input_ids``, ``labels``, ``attention_mask``."""
    length = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(items), length), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = torch.as_tensor(item["input_ids"])
        labels[row, :n] = torch.as_tensor(item["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def stack_in_memory_order(tensors):
    """``default_collate``'s stack (in a worker: into shared memory), copied in the tensors' own
    memory order. Decoded uint8 clips are (T, H, W, C) arrays seen as (C, T, H, W): a batch
    contiguous as (C, T, H, W) gathers bytes 3 apart (9.8 ms for 8 clips of 8 × 224²), a batch in
    their order is a plain copy (1.1 ms). The result is the same (B, ...) tensor, strided as the
    clips are."""
    first = tensors[0]
    order = sorted(range(first.dim()), key=lambda d: -first.stride(d))  # outermost dimension first
    alike = all(t.shape == first.shape and t.stride() == first.stride() for t in tensors)
    if not alike or order == sorted(order) or not first.permute(order).is_contiguous():  # already in order, or not dense
        return default_collate(tensors)
    stacked = default_collate([t.permute(order) for t in tensors])
    return stacked.permute(0, *(1 + order.index(d) for d in range(first.dim())))


def collate_video_samples(samples, pad_token_id=None):
    """Stack ``image`` (or a feature cache's ``frame_features``); pad token ids when present; keep
    other fields as lists. Evaluation samples
    that could not be decoded (``{"unreadable": path, "error": ...}``) are left out of the tensors
    and listed as ``batch["unreadable"]``; a batch of only those has no ``image``."""
    unreadable = [(s["unreadable"], s["error"]) for s in samples if "unreadable" in s]
    samples = [s for s in samples if "unreadable" not in s]
    if not samples:
        return {"unreadable": unreadable}
    pixels = "image" if "image" in samples[0] else "frame_features"  # frame_features: a feature cache's
    batch = {pixels: stack_in_memory_order([s[pixels] for s in samples])}
    if unreadable:
        batch["unreadable"] = unreadable
    if "input_ids" in samples[0]:
        batch.update(pad_batch(samples, pad_token_id))
    for key in samples[0]:
        if key not in batch and key not in ("input_ids", "labels"):
            batch[key] = [s[key] for s in samples]
    return batch


def sound_groups(sounds):
    """[(rows, stacked filterbanks or None)]: the rows of a batch that can be asked in one call, by
    their ``sounds`` (a tensor each, or None: not heard): those heard, by filterbank shape, then those
    not. A model asked about a heard clip gets a prompt with the audio placeholders, one about an
    unheard clip a prompt without them."""
    by_shape = {}
    for row, sound in enumerate(sounds):
        by_shape.setdefault(None if sound is None else tuple(sound.shape), []).append(row)
    return [(rows, None if shape is None else torch.stack([sounds[row] for row in rows]))
            for shape, rows in sorted(by_shape.items(), key=lambda item: item[0] is None)]
