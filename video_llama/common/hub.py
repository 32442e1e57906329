"""Where pretrained weights come from: a local folder, or a hub id found in the local HF cache.

A hub id (``meta-llama/Llama-2-7b-chat-hf``) is downloaded only when the machine is online and
``HF_HUB_OFFLINE`` is not set; otherwise the lookup fails within seconds with a message saying
where to put the weights and which config key to set.
"""

import os
import socket
from pathlib import Path

from video_llama.common.errors import UserError


class WeightsNotFoundError(UserError, FileNotFoundError):
    pass


def _offline():
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(host="huggingface.co", timeout=3.0):
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def looks_like_hub_id(value):
    parts = str(value).split("/")
    return len(parts) == 2 and all(parts) and not str(value).startswith((".", "/", "~"))


def _is_url(value):
    return str(value).startswith(("http://", "https://"))


def _cache_path(url):
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _can_download(url):
    return not _offline() and _hub_reachable(url.split("/")[2])


def _missing(url, key):
    cached = _cache_path(url)
    reason = "HF_HUB_OFFLINE is set" if _offline() else f"{url.split('/')[2]} cannot be reached"
    return WeightsNotFoundError(
        f"{key}: {cached.name} is needed ({url}) but is not in {cached.parent} and {reason}. Download it on a "
        f"machine with internet and copy it to {cached}, or set {key} to the file's path "
        f"({key}=random keeps the module random on purpose)."
    )


def resolve_weights_file(value, key):
    """A local file for a weights file the config names: a path as it is, or an http(s) URL (the
    original's default downloads) found in torch's hub cache, downloaded there only when online
    and HF_HUB_OFFLINE is unset.

    Raises:
        WeightsNotFoundError: naming the file, where to put it, and the key.
    """
    if not _is_url(value):
        return str(value)
    cached = _cache_path(str(value))
    if cached.is_file():
        return str(cached)
    if not _can_download(str(value)):
        raise _missing(str(value), key)
    import torch.hub

    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(str(value), str(cached))
    return str(cached)


def weights_file_problem(value, key):
    """Start-up form of :func:`resolve_weights_file`: the message when the file cannot be had, else None."""
    if _is_url(value) and not _cache_path(str(value)).is_file() and not _can_download(str(value)):
        return str(_missing(str(value), key))
    return None


def resolve_pretrained(name_or_path, key):
    """A local folder for ``name_or_path`` (the value of config key ``key``).

    Raises:
        WeightsNotFoundError: when it is neither a folder, nor in the HF cache, nor downloadable.
    """
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        return str(path)
    if "tiny-llm" in path.name:  # the tiny recipes' default: a folder this project writes
        raise WeightsNotFoundError(
            f"{key}: {name_or_path!r} is not a folder (looked in {Path.cwd()}); write the tiny LLM there with "
            f"`video-llama tiny-llm {name_or_path}` (make quickstart does), or set {key} to another model folder."
        )
    if not looks_like_hub_id(name_or_path):
        raise WeightsNotFoundError(
            f"{key}: {name_or_path!r} is not a folder (looked in {Path.cwd()}). Put the Hugging Face "
            f"model folder there, or set {key} to its path (e.g. --options {key}=/data/llama-2-7b-chat-hf)."
        )
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(name_or_path), local_files_only=True)
    except Exception:
        pass  # not cached: try the network below
    if not _offline() and _hub_reachable():
        return snapshot_download(str(name_or_path))
    from huggingface_hub.constants import HF_HUB_CACHE

    reason = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face hub cannot be reached"
    raise WeightsNotFoundError(
        f"{key}: {name_or_path!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}) and {reason}. "
        f"Download it on a machine with internet (huggingface-cli download {name_or_path}) and copy the "
        f"cache there, or set {key} to a local model folder (e.g. --options {key}=/data/{path.name})."
    )
