import pytest

from video_llama.common.registry import Registry, RegistryError


def test_same_class_twice_is_harmless():
    reg = Registry()

    class Builder:
        pass

    reg.register_builder("mine")(Builder)
    reg.register_builder("mine")(Builder)
    assert reg.get_builder_class("mine") is Builder
    assert reg.names("builder") == ["mine"]


def test_other_class_under_taken_name_names_both():
    reg = Registry()

    class First:
        pass

    class Second:
        pass

    reg.register_model("video_llama")(First)
    with pytest.raises(RegistryError) as err:
        reg.register_model("video_llama")(Second)
    assert "First" in str(err.value) and "Second" in str(err.value) and "video_llama" in str(err.value)


def test_unknown_name_names_kind_closest_and_known():
    reg = Registry()
    for name in ("webvid_instruct", "webvid", "cc_sbu_align"):
        reg.register_builder(name)(type(name, (), {}))
    with pytest.raises(RegistryError) as err:
        reg.get_builder_class("webvid_instrct")
    message = str(err.value)
    assert "dataset builder" in message
    assert "Did you mean 'webvid_instruct'" in message
    assert "cc_sbu_align, webvid, webvid_instruct" in message


def test_every_kind_has_lavis_names():
    import video_llama  # noqa: F401
    from video_llama.common.registry import registry

    assert "video_llama" in registry.names("model")
    assert {"webvid_instruct", "webvid"} <= set(registry.names("builder"))
    assert {"alpro_video_train", "alpro_video_eval", "blip2_image_train", "blip2_image_eval", "blip_caption"} <= set(
        registry.names("processor")
    )
    assert {"video_text_pretrain", "image_text_pretrain"} <= set(registry.names("task"))
    assert {"linear_warmup_cosine_lr", "linear_warmup_step_lr", "constant_lr"} <= set(registry.names("lr_scheduler"))
    assert registry.names("runner") == ["runner_base"]


@pytest.mark.slow
def test_a_command_whose_reader_closes_the_pipe_ends_quietly():
    """`video-llama list | head -1`: the reader goes away, the command ends without a traceback."""
    import os
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "video-llama")
    proc = subprocess.Popen([cli, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before it writes a line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
