"""The commands: ``train.py``, ``evaluate.py``, ``demo.py`` and the ``video-llama`` subcommands
(``main``), each an argument parser and a call into ``video_llama.jobs`` or ``video_llama.data_tools``.
They import nothing from each other but ``run_cli``."""

import os
import sys

from video_llama.common.errors import UserError


def run_cli(job):
    """Run ``job`` for a command's ``__main__``: a problem the user can fix (a
    :class:`~video_llama.common.errors.UserError`, a missing file) prints as one message and exits
    2, without a traceback; Ctrl-C before the loop started exits 130 with one line; a reader that
    closed our output (``| head``) ends the command quietly. Returns what ``job`` returns."""
    try:
        return job()
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # stdout to /dev/null, so that flushing it at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
