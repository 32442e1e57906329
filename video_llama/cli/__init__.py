"""The ``video-llama`` command and its subcommands."""
