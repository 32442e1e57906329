"""Name → class registry, with the LAVIS method names.

Classes register themselves with a decorator (``@registry.register_model("video_llama")``) when
their module is imported; ``video_llama/__init__.py`` imports every built-in module explicitly.
Unlike LAVIS, a lookup miss is an error that names the closest known name (never ``None``), and
importing a module twice is harmless.
"""

import difflib

from video_llama.common.errors import UserError


class RegistryError(UserError, KeyError):
    """An unknown name, or two different classes claiming one name."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return self.args[0] if self.args else ""


def closest(name, candidates):
    """The candidate most similar to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.5)
    return matches[0] if matches else None


def _qualname(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    # kind → human-readable name used in error messages
    KINDS = {
        "model": "model",
        "builder": "dataset builder",
        "processor": "processor",
        "task": "task",
        "lr_scheduler": "lr scheduler",
        "runner": "runner",
        "template": "prompt template",
    }

    def __init__(self):
        self.mapping = {kind: {} for kind in self.KINDS}
        # kind → name → where it came from ("built-in" or a plugin's name), for `video-llama list`
        self.origin = {kind: {} for kind in self.KINDS}
        self._current_origin = "built-in"

    # ---------------------------------------------------------------- registration
    def _register(self, kind, name):
        def wrap(cls):
            table = self.mapping[kind]
            existing = table.get(name)
            if existing is not None and not _same_class(existing, cls):
                raise RegistryError(
                    f"{self.KINDS[kind]} name '{name}' is already taken by {_qualname(existing)} "
                    f"(from {self.origin[kind].get(name, 'built-in')}); cannot register "
                    f"{_qualname(cls)} (from {self._current_origin}) under it. Pick another name."
                )
            table[name] = cls
            self.origin[kind].setdefault(name, self._current_origin)
            return cls

        return wrap

    def register_model(self, name):
        return self._register("model", name)

    def register_builder(self, name):
        return self._register("builder", name)

    def register_processor(self, name):
        return self._register("processor", name)

    def register_task(self, name):
        return self._register("task", name)

    def register_lr_scheduler(self, name):
        return self._register("lr_scheduler", name)

    def register_runner(self, name):
        return self._register("runner", name)

    def register_template(self, name):
        return self._register("template", name)

    # ---------------------------------------------------------------- lookup
    def _get(self, kind, name):
        table = self.mapping[kind]
        if name in table:
            return table[name]
        label = self.KINDS[kind]
        known = ", ".join(sorted(table)) or "(none registered)"
        guess = closest(name, table)
        hint = f" Did you mean '{guess}'?" if guess else ""
        raise RegistryError(f"Unknown {label} '{name}'.{hint} Known {label}s: {known}.")

    def get_model_class(self, name):
        return self._get("model", name)

    def get_builder_class(self, name):
        return self._get("builder", name)

    def get_processor_class(self, name):
        return self._get("processor", name)

    def get_task_class(self, name):
        return self._get("task", name)

    def get_lr_scheduler_class(self, name):
        return self._get("lr_scheduler", name)

    def get_runner_class(self, name):
        return self._get("runner", name)

    def get_template(self, name):
        return self._get("template", name)

    # ---------------------------------------------------------------- listing
    def names(self, kind):
        """The registered names of ``kind`` (a key of :attr:`KINDS`), sorted."""
        return sorted(self.mapping[kind])


def _same_class(a, b):
    # A module imported twice (e.g. as a file path and as a module) yields two class objects with
    # the same qualified name and source file; treat them as one.
    if a is b or (not isinstance(a, type) and a == b):
        return True
    return _qualname(a) == _qualname(b) and getattr(a, "__module__", None) == getattr(b, "__module__", None)


registry = Registry()
