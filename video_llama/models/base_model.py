"""What every registered model shares: its default config files, chosen by ``model_type``, and
what the config loader asks a model class about its ``model:`` section (the loader knows no model
key itself)."""

import torch.nn as nn
from omegaconf import OmegaConf

from video_llama.common.config import CONFIG_DIR


class BaseModel(nn.Module):
    # model_type → default YAML, relative to video_llama/configs; merged over BASE_CONFIG_PATH.
    PRETRAINED_MODEL_CONFIG_DICT = {}
    BASE_CONFIG_PATH = None
    DEFAULT_MODEL_TYPE = None
    # ``model:`` keys that using a trained model may set apart from its run (where files are, how it
    # loads and runs); every other key is the trained run's (see common.config.adopt_trained_model)
    DEPLOYMENT_KEYS = ("ckpt",)
    # file keys whose weights a run's checkpoint holds once trained from them: a model rebuilt from
    # the run does not read them again (unless the user names one anew)
    RUN_HOLDS = ()
    # keys of other code bases' configs accepted for their sake: key → common.config.LegacyKey
    LEGACY_KEYS = {}
    # keys naming files or folders, found from the current folder or the YAML's; the CHECKED ones must
    # exist at start-up (or be a URL, or ``random``); PROMPT ones are also found among the package's prompts
    PATH_KEYS = ("ckpt",)
    CHECKED_PATH_KEYS = ("ckpt",)
    PROMPT_PATH_KEYS = ()
    # processor keys that, set nowhere, take a model key's value: processor key → model key
    PROCESSOR_KEYS = {}

    @classmethod
    def fill_derived(cls, model_cfg):
        """Set the keys whose null default means another key's value (in place)."""

    @classmethod
    def config_problems(cls, model_cfg, datasets_cfg):
        """Messages for settings that contradict each other, or processors whose frames the model
        cannot take; each names the keys and the fix."""
        return []

    @classmethod
    def runtime_problems(cls, model_cfg, device):
        """Messages for what this machine lacks to build the model on ``device``."""
        return []

    @classmethod
    def default_config_path(cls, model_type):
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            raise KeyError(
                f"{cls.__name__} has no model_type {model_type!r}; known: {sorted(cls.PRETRAINED_MODEL_CONFIG_DICT)}"
            )
        return CONFIG_DIR / cls.PRETRAINED_MODEL_CONFIG_DICT[model_type]

    @classmethod
    def default_config(cls, model_type):
        """The full ``model:`` section for ``model_type``: every key with its default."""
        layers = [OmegaConf.load(CONFIG_DIR / cls.BASE_CONFIG_PATH).model] if cls.BASE_CONFIG_PATH else []
        layers.append(OmegaConf.load(cls.default_config_path(model_type)).model)
        return OmegaConf.merge(*layers)

    @property
    def device(self):
        return next(self.parameters()).device
