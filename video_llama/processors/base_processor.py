"""Processors turn one raw sample field (a clip, an image, a caption) into model input.

Each processor declares its settings as a ``Config`` dataclass: that dataclass is the single place
its keys and defaults live, and the experiment config is validated against it.
"""

import dataclasses


class BaseProcessor:
    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def default_config(cls):
        """The processor's keys and defaults as a plain dict (used to validate YAML)."""
        return dataclasses.asdict(cls.Config())

    @classmethod
    def from_config(cls, cfg=None):
        """Build from a YAML section such as ``{name: alpro_video_train, n_frms: 8}``."""
        values = dict(cfg or {})
        values.pop("name", None)
        known = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting(s) {unknown}; known: {sorted(known)}")
        return cls(cls.Config(**values))
