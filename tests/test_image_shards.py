"""cc_sbu / laion: image-caption WebDataset tars (jpg + txt or json) as in the original stage 1."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, TINY_CONFIG

CAPTIONS = ["a red square on grey", "a blue stripe", "two green dots", "a yellow corner"]


def jpeg(seed, fmt="JPEG"):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_tars(tmp_path_factory):
    """Two tars as img2dataset writes them: jpg + txt + json, one png, one json-only caption, one
    corrupt image."""
    import webdataset as wds

    folder = tmp_path_factory.mktemp("image_tars")
    samples = [
        [{"__key__": "000000000", "jpg": jpeg(0), "txt": CAPTIONS[0].encode(), "json": b'{"caption": "ignored: txt wins"}'},
         {"__key__": "000000001", "png": jpeg(1, "PNG"), "txt": CAPTIONS[1].encode()},
         {"__key__": "000000002", "jpg": b"\xff\xd8 not a jpeg", "txt": b"broken"}],
        [{"__key__": "000000003", "jpg": jpeg(3), "json": json.dumps({"caption": CAPTIONS[2]}).encode()},
         {"__key__": "000000004", "jpg": jpeg(4), "txt": CAPTIONS[3].encode()}],
    ]
    for number, shard in enumerate(samples):
        with wds.TarWriter(str(folder / f"{number:05d}.tar")) as writer:
            for sample in shard:
                writer.write(sample)
    return folder


def image_recipe(tmp_path, llm, shards, builder="cc_sbu", **run):
    """The tiny recipe with ``builder`` reading ``shards`` as its only dataset."""
    recipe = yaml.safe_load(TINY_CONFIG.read_text())
    recipe["model"]["llama_model"] = str(llm)
    recipe["datasets"] = {builder: {
        "build_info": {"shards": shards},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 112},
                          "eval": {"name": "blip2_image_eval", "image_size": 112}},
        "num_video_query_token": 32, "tokenizer_name": str(llm), "model_type": "llama_v2", "prompt_path": None}}
    recipe["run"].update(task="image_text_pretrain", output_dir=str(tmp_path / "out"), **run)
    path = tmp_path / f"{builder}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("builder", ["cc_sbu", "laion"])
def test_image_caption_tars_give_one_frame_samples_with_the_caption_as_answer(tiny_llm_dir, image_tars, tmp_path, builder):
    from video_llama.common.config import Config
    from video_llama.common.registry import registry
    from video_llama.conversation import load_tokenizer
    from video_llama.conversation.templates import IGNORE_INDEX

    shards = str(image_tars / "{00000..00001}.tar")
    cfg = Config.from_file(image_recipe(tmp_path, tiny_llm_dir, shards, builder))
    (dataset,) = registry.get_builder_class(builder)(cfg.datasets_cfg[builder]).build_datasets().values()
    assert len(dataset) == 5  # counted from the tar headers
    dataset.substitute_unreadable = False  # in order, as evaluation reads them
    samples = [dataset[i] for i in range(5)]
    assert samples[2]["unreadable"].endswith("00000.tar:000000002") and "cannot decode image" in samples[2]["error"]
    assert list(dataset.reader.failed) == [samples[2]["unreadable"]]  # counted like an unreadable clip
    tokenizer = load_tokenizer(str(tiny_llm_dir))  # with the placeholder token, as the dataset's
    patch = tokenizer.convert_tokens_to_ids("<ImageHere>")
    for sample, caption in zip([s for s in samples if "image" in s], CAPTIONS):
        assert sample["image"].shape == (3, 112, 112)  # one frame: the model adds the time axis
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        first = ids.index(patch)  # the model's prompt (model.prompt_path) holds the image's 32 placeholders
        assert ids[first:first + 32] == [patch] * 32 and ids.count(patch) == 32
        assert set(labels[:first + 32]) == {IGNORE_INDEX}  # no loss on the prompt and the image
        answer = tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=True)
        assert answer.strip().removesuffix("</s>").strip() == caption and sample["text_input"] == caption


def test_image_tars_not_set_is_a_clear_error():
    from video_llama.common.registry import registry
    from video_llama.datasets.datasets.base_video_dataset import AnnotationError

    with pytest.raises(AnnotationError, match=r"datasets.laion.build_info.shards is not set"):
        registry.get_builder_class("laion")().build_datasets()


@pytest.mark.slow
def test_train_from_image_caption_tars(tiny_llm_dir, image_tars, tmp_path):
    recipe = image_recipe(tmp_path, tiny_llm_dir, str(image_tars / "{00000..00001}.tar"),
                          iters_per_epoch=3, num_workers=1, batch_size_train=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "train.py", "--cfg-path", str(recipe)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 3 and all(np.isfinite(losses))
