"""The one base class of the errors a user can fix (a config key, a file, a folder).

Entry points (``train.py``, ``evaluate.py``, ``video-llama ...``) print such an error as one
message and exit 2, without a traceback; any other exception is a bug and keeps its traceback.
Each error also keeps its built-in type (ValueError, FileNotFoundError, ...), so code that
catches those goes on working.
"""


class UserError(Exception):
    """Something the user can fix; the message names the file or key and the fix."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or run folder that cannot be resumed or loaded."""


class Interrupted(UserError):
    """A run stopped by SIGINT/SIGTERM after writing a checkpoint to resume from; ``exit_code``
    is the shell's for that signal (130, 143), so a scheduler sees a preempted job."""

    def __init__(self, message, exit_code=130):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingError(UserError):
    """Training cannot go on from here (non-finite gradients); the message names the step's clips."""
