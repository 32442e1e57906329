"""The code's shape: every documented setting is read somewhere, and the layers point one way."""

import ast
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGE = Path(__file__).resolve().parent.parent / "video_llama"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def names_read_by_code():
    """Attribute names and exact string constants in the package's code (docstrings never equal a
    key, so a key mentioned only in prose does not count)."""
    names = set()
    for _, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
    return names


def keys(cfg, path=""):
    for key, value in cfg.items():
        yield f"{path}{key}", key
        if isinstance(value, DictConfig):
            yield from keys(value, f"{path}{key}.")


def test_every_key_of_the_default_yamls_is_read_by_some_code():
    """A key that no code reads is a setting that silently does nothing."""
    read = names_read_by_code()
    unread = []
    for yaml_file in sorted((PACKAGE / "configs").rglob("*.yaml")):
        for section, cfg in OmegaConf.load(yaml_file).items():
            if section not in read:
                unread.append(f"{yaml_file.relative_to(PACKAGE)}: {section}")
            if not isinstance(cfg, DictConfig):
                continue
            skip_levels = 1 if section == "datasets" else 0  # datasets.<name> is the builder's name
            for path, key in keys(cfg):
                if path.count(".") < skip_levels:
                    continue
                if section == "datasets" and (".vis_processor." in f".{path}" or ".text_processor." in f".{path}"):
                    continue  # processor sections: split names and the processors' own Config fields
                if key not in read:
                    unread.append(f"{yaml_file.relative_to(PACKAGE)}: {section}.{path}")
    assert not unread, unread


def test_every_processor_setting_is_read_by_the_processor():
    import dataclasses

    import video_llama  # noqa: F401
    from video_llama.common.registry import registry

    read = names_read_by_code()
    for name in registry.names("processor"):
        fields = [f.name for f in dataclasses.fields(registry.get_processor_class(name).Config)]
        assert all(f in read for f in fields), (name, [f for f in fields if f not in read])


# ----------------------------------------------------------------------------- the import graph

# package → packages it must never import (docs/architecture.md says why)
FORBIDDEN = {
    "common": {"conversation", "processors", "models", "datasets", "tasks", "runners", "data_tools", "jobs", "cli"},
    "processors": {"conversation", "models", "datasets", "tasks", "runners", "data_tools", "jobs", "cli"},
    "conversation": {"processors", "models", "datasets", "tasks", "runners", "data_tools", "jobs", "cli"},
    "models": {"datasets", "tasks", "runners", "data_tools", "jobs", "cli"},
    "datasets": {"models", "tasks", "runners", "data_tools", "jobs", "cli"},
    "data_tools": {"models", "tasks", "runners", "jobs", "cli"},
    "tasks": {"runners", "data_tools", "jobs", "cli"},
    "runners": {"data_tools", "jobs", "cli"},
    "jobs": {"data_tools", "cli"},
}


def imported_packages(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] == "video_llama" and len(parts) > 1:
                yield parts[1]


def test_layers_point_one_way():
    arrows = []
    for path, tree in modules():
        relative = path.relative_to(PACKAGE).parts
        if len(relative) < 2:
            continue  # video_llama/__init__.py imports everything to register it
        layer = relative[0]
        for target in imported_packages(tree):
            if target in FORBIDDEN.get(layer, ()):
                arrows.append(f"{path.relative_to(PACKAGE)} imports video_llama.{target}")
    assert not arrows, arrows


def test_commands_import_nothing_from_each_other_but_run_cli():
    """A command is an argument parser and a call into jobs or data_tools: what two commands share
    lives there, so a reader finds the work where the library is."""
    arrows = []
    for path, tree in modules():
        relative = path.relative_to(PACKAGE).parts
        if relative[0] != "cli" or path.name == "main.py":  # main dispatches to the commands by name
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("video_llama.cli"):
                names = [alias.name for alias in node.names]
                if node.module != "video_llama.cli" or names != ["run_cli"]:
                    arrows.append(f"{path.relative_to(PACKAGE)}: from {node.module} import {', '.join(names)}")
    assert not arrows, arrows
