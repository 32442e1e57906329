"""The browser demo (Gradio): upload a video or an image, chat about it, restart.

Every browser session has its own conversation (a ``gr.State`` of what was uploaded and said);
the model is shared. A file that cannot be used (wrong type, undecodable, too large) gives a
message in the page and the app keeps running. Binds to 127.0.0.1 unless told otherwise.
"""

import logging
import os
from pathlib import Path

from video_llama.common.errors import UserError
from video_llama.conversation.chat import WEB_DEFAULTS, ChatError
from video_llama.processors.image_processors import IMAGE_EXTENSIONS
from video_llama.processors.video_decoding import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

WAITING = "Upload a video or an image, then press **Upload & start chat**."


def example_files(folder):
    """The videos and images of ``folder`` (the demo's examples), sorted; none when it is absent."""
    if not folder or not Path(folder).is_dir():
        return []
    kinds = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    return sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in kinds)


def build_app(setup, examples_dir=None, defaults=None):
    """The Gradio Blocks app over ``setup`` (a jobs.chat.ChatSetup); ``defaults``: the generation
    controls' starting values (WEB_DEFAULTS, the original demo's)."""
    import gradio as gr

    defaults = {**WEB_DEFAULTS, **(defaults or {})}

    def upload(video, image, state):
        """Start a conversation about the uploaded file; a message instead when it cannot be used."""
        path = video or image
        if not path:
            return state, gr.update(), WAITING, gr.update(), gr.update()
        name = Path(path).name
        allowed = VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS
        refused = None
        if Path(path).suffix.lower() not in allowed:
            refused = f"not a {'video' if video else 'image'} file type ({', '.join(sorted(allowed))})"
        else:
            chat = setup.new_chat()
            try:
                chat.upload_video(path) if video else chat.upload_image(path)
            except (UserError, ChatError, OSError) as err:
                logger.warning("web demo: %s", err)
                refused = str(err).replace(str(path), name)  # the upload's temporary path means nothing to the user
        if refused:  # cleared, so that another file can be dropped in at once
            return state, gr.update(), f"**Cannot use {name}**: {refused}", None, None
        state = {"visual": chat.visual, "history": []}
        question = gr.update(interactive=True, placeholder=f"Ask about {name}")
        status = f"Now talking about **{name}**. Ask a question."
        if chat.visual.hearing:  # a model with the audio branch: whether its answers hear the clip
            status += f"\n\n**Sound**: {chat.visual.hearing.replace(str(path), name)}"
        if chat.visual.warning:  # stays shown above the answers until the next upload
            status += f"\n\n**Warning**: {chat.visual.warning.replace(str(path), name)}"
        return state, question, status, gr.update(), gr.update()

    def ask(message, history, state, max_new_tokens, num_beams, temperature, top_p, repetition_penalty):
        """Stream the answer into the chat; the conversation's turns are kept in ``state``."""
        if not message.strip():
            yield history, state, "", gr.update()
            return
        if not state:
            yield history, state, message, "Upload a video or an image first."
            return
        chat = setup.new_chat(visual=state["visual"], history=list(state["history"]))
        settings = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams), "temperature": temperature,
                    "top_p": top_p, "repetition_penalty": repetition_penalty, "do_sample": num_beams == 1}
        history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        try:
            for text in chat.stream(message, **settings):
                history[-1] = {"role": "assistant", "content": text}
                yield history, state, "", gr.update()
        except ChatError as err:
            yield history[:-2], state, message, f"**Cannot answer**: {err}"
            return
        yield history, {"visual": chat.visual, "history": chat.history}, "", gr.update()

    def restart():
        return None, None, [], None, gr.update(value="", interactive=False, placeholder="Upload a video or an image first"), WAITING

    with gr.Blocks(title="Video-LLaMA demo") as app:
        gr.Markdown("## Video-LLaMA\nUpload a video or an image and ask about it.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video")
                image = gr.Image(label="Image", type="filepath", sources=["upload"], elem_id="image")
                upload_button = gr.Button("Upload & start chat", variant="primary", elem_id="upload")
                restart_button = gr.Button("Restart", elem_id="restart")
                max_new_tokens = gr.Slider(1, 1000, value=defaults["max_new_tokens"], step=1, label="Max new tokens")
                num_beams = gr.Slider(1, 10, value=defaults["num_beams"], step=1, label="Beam search numbers")
                temperature = gr.Slider(0.1, 2.0, value=defaults["temperature"], step=0.1, label="Temperature")
                top_p = gr.Slider(0.1, 1.0, value=defaults["top_p"], step=0.05, label="Top p")
                repetition_penalty = gr.Slider(1.0, 2.0, value=defaults["repetition_penalty"], step=0.05,
                                               label="Repetition penalty")
            with gr.Column(scale=2):
                status = gr.Markdown(WAITING, elem_id="status")
                chatbot = gr.Chatbot(label="Video-LLaMA", elem_id="chatbot", height=420)
                question = gr.Textbox(label="Question", placeholder="Upload a video or an image first",
                                      interactive=False, elem_id="question")
        examples = example_files(examples_dir)
        videos = [[p] for p in examples if Path(p).suffix.lower() in VIDEO_EXTENSIONS]
        images = [[p] for p in examples if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
        if videos:
            gr.Examples(videos, inputs=[video], label="Example clips")
        if images:
            gr.Examples(images, inputs=[image], label="Example images")

        upload_button.click(upload, [video, image, state], [state, question, status, video, image])
        answering = question.submit(ask, [question, chatbot, state, max_new_tokens, num_beams, temperature, top_p,
                                          repetition_penalty], [chatbot, state, question, status])
        restart_button.click(restart, [], [video, image, chatbot, state, question, status], cancels=[answering])
    return app


# Gradio's own notices (a browser that cannot preview an upload says "Video not playable") go to the
# bottom right: at the top they covered the status line, where the app says what it made of the file
NOTICES_AT_THE_BOTTOM = ".toast-wrap { top: auto !important; bottom: var(--size-4) !important; }"


def serve(setup, host="127.0.0.1", port=7860, max_upload_mb=200, examples_dir=None, defaults=None, block=True):
    """Serve the app; returns it (``block=False``: at once, the server running in the background, as a
    notebook or a test wants)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the web demo binds to %s: anyone who can reach this address can use the model and "
                       "upload files to this machine", host)
    app = build_app(setup, examples_dir, defaults)
    app.queue()
    app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb", prevent_thread_lock=not block,
               show_error=True, css=NOTICES_AT_THE_BOTTOM)
    return app
