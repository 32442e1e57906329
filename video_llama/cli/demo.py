"""``demo.py``: chat with a finetuned model about a video or an image.

    python demo.py --cfg-path eval_configs/video_llama_eval_only_vl.yaml --video clip.mp4             # terminal chat
    python demo.py --cfg-path ... --video clip.mp4 --question "What is happening?"                    # one answer
    python demo.py --cfg-path ... --web [--host 127.0.0.1 --port 7860 --examples DIR]                 # browser

The config is an evaluation config: its ``model`` section (``model.ckpt``: a training run folder,
a checkpoint, or a published one) and the ``vis_processor`` of its first dataset, as the original
demo reads them. In the terminal, a line is a question; ``/video PATH [SOUND]``, ``/image PATH``,
``/reset`` and ``/quit`` do what they say. A clip with fewer frames than the model samples gets a
``warning:`` line (the web UI: its status) before any answer about it. A model with the audio branch
hears the clip's soundtrack (``--audio FILE``: that sound instead) and a ``sound:`` line says whether
it did; a clip without sound is answered from its frames.
"""

import argparse
import shlex
import sys

from video_llama.common.errors import UserError
from video_llama.conversation.chat import PROMPT_STYLES, WEB_DEFAULTS, ChatError
from video_llama.jobs.chat import load_setup
from video_llama.jobs.experiment import add_config_arguments, experiment

COMMANDS = "commands: /video PATH [SOUND], /image PATH, /reset, /quit; anything else is a question"


def generation_settings(args):
    """Greedy, except where the flags say otherwise (a temperature or top_p asks for sampling)."""
    settings = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "do_sample": False,
                "repetition_penalty": args.repetition_penalty}
    if args.temperature is not None or args.top_p is not None:
        settings.update(do_sample=True, temperature=args.temperature or 1.0, top_p=args.top_p or 1.0)
    return settings


def terminal_chat(chat, settings, lines=sys.stdin, out=sys.stdout):
    """A line is a question, or a command; a problem with a file or a question prints one line and
    the chat goes on."""
    print(COMMANDS, file=out, flush=True)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        command, _, argument = line.partition(" ")
        try:
            if command == "/quit":
                break
            elif command == "/reset":
                chat.reset()
                print("(conversation cleared; upload a video or an image)", file=out, flush=True)
            elif command in ("/video", "/image"):
                if command == "/video":  # a second path: the sound to hear instead of its soundtrack
                    chat.upload_video(*(paths(argument) or [""])[:2])
                else:
                    chat.upload_image(argument.strip())
                print(f"(now talking about {chat.visual.name})", file=out, flush=True)
                say_what_is_used(chat, out)
            else:
                shown = None
                for text in chat.stream(line, **settings):  # the answer so far, as its tokens come
                    if shown is None:
                        print("answer: ", end="", file=out)
                        shown = ""
                    print(text[len(shown):] if text.startswith(shown) else f"\n{text}", end="", file=out, flush=True)
                    shown = text
                print(file=out, flush=True)
        except (UserError, ChatError) as err:
            print(f"error: {err}", file=out, flush=True)


def paths(argument):
    """The paths of a command line (quoted where they hold spaces)."""
    try:
        return shlex.split(argument)
    except ValueError as err:
        raise ChatError(f"cannot read the paths in {argument!r}: {err}") from None


def say_what_is_used(chat, out):
    """Print whether the answers hear the clip (a model with the audio branch) and why they may be
    unreliable, if anything says so."""
    if chat.visual.hearing:
        print(f"sound: {chat.visual.hearing}", file=out, flush=True)
    if chat.visual.warning:
        print(f"warning: {chat.visual.warning}", file=out, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, "evaluation YAML (model.ckpt + a vis_processor)", trained=True)
    visual = parser.add_mutually_exclusive_group()
    visual.add_argument("--video", help="the clip to talk about")
    visual.add_argument("--image", help="or an image")
    parser.add_argument("--audio", help="with --video, a sound file to hear instead of its soundtrack (audio branch)")
    parser.add_argument("--question", help="print the (greedy) answer to this question and exit")
    parser.add_argument("--web", action="store_true", help="serve the Gradio UI instead of the terminal chat")
    parser.add_argument("--host", default="127.0.0.1", help="address the web UI binds to (others than 127.0.0.1 expose it)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-upload-mb", type=float, default=200, help="the web UI refuses larger uploads")
    parser.add_argument("--examples", help="a folder of clips and images the web UI offers as examples")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's run.device)")
    parser.add_argument("--max-new-tokens", type=int, default=300, help="(these settings start the web UI's controls too)")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--prompt-style", choices=PROMPT_STYLES, default="training",
                        help="ask as the model was trained (default), or as the original Video-LLaMA demo asked "
                             "(its system prompt and separators: to compare answers with it)")
    args = parser.parse_args(argv)
    if args.web and args.question:
        parser.error("--question prints one answer in the terminal; leave out --web")
    if args.audio and not args.video:
        parser.error("--audio goes with --video: the sound of that clip")

    setup = load_setup(*experiment(args), args.device, args.plugins)
    setup.prompt_style = args.prompt_style
    if args.web:
        from video_llama.jobs.web_demo import serve  # Gradio loads only for the web UI

        given = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "temperature": args.temperature,
                 "top_p": args.top_p, "repetition_penalty": args.repetition_penalty}
        defaults = {**WEB_DEFAULTS, **{key: value for key, value in given.items() if value is not None}}
        serve(setup, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, examples_dir=args.examples,
              defaults=defaults)
        return 0
    chat = setup.new_chat()
    if args.video:
        chat.upload_video(args.video, args.audio)
        say_what_is_used(chat, sys.stderr)  # stdout: the answer alone (--question) or the chat
    elif args.image:
        chat.upload_image(args.image)
    settings = generation_settings(args)
    if args.question:
        if chat.visual is None:
            parser.error("--question needs --video or --image")
        print(chat.ask(args.question, **settings))
        return 0
    terminal_chat(chat, settings)
    return 0
