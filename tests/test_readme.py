"""The README's commands run as written: every command of its bash blocks is parsed by the real
command's argument parser (a wrong flag fails as it would for a user), and the files it names exist
(shipped YAMLs and examples, and the quickstart's outputs as `synth --context` names them)."""

import argparse
import re
import shlex
import sys

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
QUICKSTART_OUTPUT = "output/quickstart/videos/"


def readme_commands():
    """Each command line of the README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


class Parsed(Exception):
    """Raised by the patched parser once the command's arguments parsed: nothing runs."""


def entry_point(tokens):
    """(callable taking argv, argv) of a README command's Python entry, or None for make/pip."""
    from video_llama.cli import demo
    from video_llama.jobs import experiment
    from video_llama.cli import main as video_llama_main

    program, args = tokens[0], tokens[1:]
    if program == "srun":
        return entry_point(args)
    if program == "sbatch" and args[0] == "examples/slurm/train.sbatch":  # the script runs train.py on its argument
        return experiment.train, ["--cfg-path", args[1], "--options", "run.resume=auto", *args[2:]]
    if program == ".venv/bin/torchrun":
        script = next(i for i, t in enumerate(args) if t.endswith(".py"))
        return entry_point([".venv/bin/python", *args[script:]])
    if program == ".venv/bin/video-llama":
        return video_llama_main.main, args
    if program == ".venv/bin/python":
        script, rest = args[0], args[1:]
        if script in ("train.py", "evaluate.py"):
            return getattr(experiment, script[:-3]), rest
        if script == "demo.py":
            return demo.main, rest
        if script.startswith("benchmarks/"):
            import runpy

            def run_benchmark(argv):
                sys.argv = [script, *argv]
                runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
            return run_benchmark, rest
    return None


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_parses_and_names_files_that_exist(command, monkeypatch):
    tokens = shlex.split(command)
    assert tokens[0] in (".venv/bin/python", ".venv/bin/video-llama", ".venv/bin/torchrun", ".venv/bin/pip", "srun", "sbatch", "make"), \
        f"{command}: call the venv's programs (.venv/bin/...), as the README says"
    for token in tokens:  # shipped files the command names
        for path in re.findall(r"(?:^|=|:)((?:train_configs|eval_configs|examples|benchmarks)/[\w./-]+)", token):
            assert (REPO_ROOT / path).exists(), f"{command}: {path} does not exist"
    if tokens[0] == "make":
        assert re.search(rf"^{tokens[1]}:", (REPO_ROOT / "Makefile").read_text(), re.M)
        return
    entry = entry_point(tokens)
    if entry is None:
        return
    run, argv = entry
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)  # a wrong flag exits 2 here, as for the user
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(Parsed):
        run(argv)


def test_the_quickstart_files_the_readme_names_are_the_ones_synth_writes(tmp_path):
    from video_llama.data_tools.synthetic import write_context_dataset

    named = sorted({m for c in readme_commands() for m in re.findall(rf"{QUICKSTART_OUTPUT}[\w./-]+\.\w+", c)})
    assert named, "the README's chat example names a quickstart clip"
    write_context_dataset(tmp_path, per_class=1, workers=1)
    for path in named:
        assert (tmp_path / path[len(QUICKSTART_OUTPUT):]).is_file(), f"README names {path}, which synth does not write"
