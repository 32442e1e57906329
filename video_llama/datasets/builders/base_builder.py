"""LAVIS-style dataset builders: ``registry.get_builder_class(name)(cfg).build_datasets()``."""

from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"


class BaseDatasetBuilder:
    # type → default YAML (relative to video_llama/configs, or absolute for plugins). The YAML
    # holds ``datasets: {<registered name>: {...}}`` with every key the builder understands.
    DATASET_CONFIG_DICT = {}

    def __init__(self, cfg=None):
        self.config = cfg if cfg is not None else self.default_config()

    @classmethod
    def default_config_path(cls, type="default"):
        return CONFIG_DIR / cls.DATASET_CONFIG_DICT[type]

    @classmethod
    def default_config(cls, type="default"):
        """The builder's section of its default YAML (the YAML's single ``datasets`` entry)."""
        datasets = OmegaConf.load(cls.default_config_path(type)).datasets
        if len(datasets) != 1:
            raise ValueError(f"{cls.default_config_path(type)} must define exactly one dataset, found {list(datasets)}")
        return next(iter(datasets.values()))
