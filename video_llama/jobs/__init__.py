"""What each command does, as Python functions that take the command's arguments: train and
evaluate an experiment (``experiment``), calibrate a trained run (``calibrate``), load a trained
model to talk to (``chat``) in the terminal or a browser (``web_demo``), answer many videos
(``infer``). The ``cli`` modules parse arguments and call these; tests, benchmarks and notebooks
call them directly."""
