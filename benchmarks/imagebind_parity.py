"""Our ImageBind towers against ImageBind's own code: the same weights under the same names give the
same embeddings, at ImageBind's 224² frames and at 112² (its positions resized). Needs a checkout of ImageBind's model code (not shipped here: CC-BY-NC), e.g. the
original Video-LLaMA's ``video_llama/models/ImageBind``, and its imports (einops, ftfy, regex,
iopath) on the path.

    python benchmarks/imagebind_parity.py --imagebind PATH/ImageBind [--deps DIR]

Both are built at small random sizes (the parity of names and arithmetic does not depend on them),
ImageBind's vision and audio weights are loaded into ours by name (strict: no name missing or left
over), and a batch of images and of filterbank clips goes through both. Prints the largest
absolute difference of the embeddings (and their norms: 1 for vision, 20 for audio).
"""

import argparse
import sys

import torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagebind", required=True, help="the folder holding ImageBind's models/ package")
    parser.add_argument("--deps", help="a folder with einops, ftfy, regex and iopath (pip install --target DIR ...)")
    args = parser.parse_args(argv)
    sys.path[:0] = [args.imagebind, *([args.deps] if args.deps else [])]
    from models import imagebind_model  # ImageBind's own code
    from omegaconf import OmegaConf

    from video_llama.models.imagebind import AUDIO, VISION, ImageBindTowers

    sizes = dict(vision_width=64, vision_layers=2, vision_heads=4, vision_patch=14, audio_width=48, audio_layers=2, audio_heads=4,
                 embed_dim=32, audio_drop_path=0.1)
    torch.manual_seed(0)
    theirs = imagebind_model.ImageBindModel(
        vision_embed_dim=sizes["vision_width"], vision_num_blocks=sizes["vision_layers"],
        vision_num_heads=sizes["vision_heads"], audio_embed_dim=sizes["audio_width"],
        audio_num_blocks=sizes["audio_layers"], audio_num_heads=sizes["audio_heads"], out_embed_dim=sizes["embed_dim"],
        audio_drop_path=sizes["audio_drop_path"], text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
        depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2, thermal_embed_dim=32, thermal_num_blocks=1,
        thermal_num_heads=2, imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2).eval()
    ours = ImageBindTowers(OmegaConf.create(sizes)).eval()
    state = {n: t for n, t in theirs.state_dict().items() if f".{VISION}." in n or f".{AUDIO}." in n}
    result = ours.load_state_dict(state, strict=True)  # raises on any name missing or left over
    print(f"names: {len(state)} of ImageBind's vision and audio tensors loaded by name ({result})")

    sounds = torch.randn(2, 4, 1, 128, 204)
    with torch.no_grad():
        for side in (224, 112):  # the size its positions are learnt for, and one they are resized to
            images = torch.randn(3, 3, side, side)
            _, theirs_ = theirs.get_audio_feature(images, imagebind_model.ModalityType.VISION)
            ours_ = ours(images[:, None], VISION)[:, 0]
            print(f"vision {side}²: {tuple(ours_.shape)}, max |difference| {float((theirs_ - ours_).abs().max()):.2e}, "
                  f"norms {float(ours_.norm(dim=-1).mean()):.3f}")
        _, their_audio = theirs.get_audio_feature(sounds, imagebind_model.ModalityType.AUDIO)
        our_audio = ours(sounds, AUDIO)
    print(f"audio: {tuple(our_audio.shape)}, max |difference| {float((their_audio - our_audio).abs().max()):.2e}, "
          f"norms {float(our_audio.norm(dim=-1).mean()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
