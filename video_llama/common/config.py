"""The experiment config: layered YAML, validated as a whole before any data or model work.

Merge order (later wins)::

    model defaults (base.yaml ← <model_type>.yaml)  ← each dataset's defaults.yaml
        ← run defaults (configs/default.yaml) ← the user's YAML ← --options key=value

The defaults files are also the schema: a key the defaults do not have is a typo, reported with
its full path and the closest known key. Processor sections (``vis_processor.train`` ...) are
checked against the ``Config`` dataclass of the processor they name. All problems are collected
and raised together as one :class:`ConfigError`.

This module knows no model or dataset key. What a section means beyond its defaults is declared by
the component that reads it, and the loader asks: the registered model class (``LEGACY_KEYS``,
``PATH_KEYS``, ``PROCESSOR_KEYS``, ``fill_derived``, ``config_problems``, ``runtime_problems``;
for video_llama in ``models/video_llama_config.py``) and each builder (``MODEL_KEYS``: what the
data takes from the model; ``PATH_KEYS``, ``config_problems``, ``resolve_paths``). The ``run``
section's keys are ``configs/default.yaml``'s, checked here.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from video_llama.common.errors import UserError
from video_llama.common.registry import RegistryError, closest, registry

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CONFIG_DIR = PACKAGE_DIR / "configs"  # the default YAMLs of the run, of each model and of each builder
PROMPTS_DIR = PACKAGE_DIR / "prompts"
DEFAULT_RUN_CONFIG = CONFIG_DIR / "default.yaml"
TOP_LEVEL_KEYS = ("model", "datasets", "run", "plugins")
PROCESSOR_SECTIONS = ("vis_processor", "text_processor")
EVAL_MODES = ("rank", "generate")
ANY = object()  # a LegacyKey accepted whatever its value


@dataclass(frozen=True)
class LegacyKey:
    """A key of another code base's configs (the original Video-LLaMA's) that a component accepts
    for its sake without acting on it: only with a value that means what this version does anyway
    (``accepted``, or ``ANY``), dropped from the resolved config, and logged with ``why``. With
    ``means``, a True value sets that key instead (``low_resource`` → ``llm_load_in_8bit``)."""

    accepted: object
    why: str
    means: str = None


logger = logging.getLogger(__name__)


class ConfigError(UserError, ValueError):
    """One or more problems in an experiment config; the message lists all of them."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


def load_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf's own errors
        raise ConfigError([f"cannot parse {path}: {err}"]) from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError([f"{path} must hold a mapping with model/datasets/run, not a {type(cfg).__name__}"])
    return cfg


def parse_options(options):
    """``["run.init_lr=1e-4", "model.ckpt=x.pth"]`` → a DictConfig (values parsed as YAML)."""
    options = list(options or [])
    bad = [o for o in options if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"--options entry {o!r} is not key=value (e.g. run.init_lr=1e-4)" for o in bad])
    parsed = OmegaConf.create({})
    for option in options:
        key, text = option.split("=", 1)
        try:
            value = OmegaConf.select(OmegaConf.from_dotlist([f"v={text}"]), "v")
        except Exception as err:
            raise ConfigError([f"cannot parse --options {option!r}: {err}"]) from err
        if value is None and text.strip() not in ("", "null", "~", "None"):
            value = text  # e.g. end_sym=### parses as a YAML comment; the user meant the text
        OmegaConf.update(parsed, key, value, force_add=True)
    return parsed


def merge_options(user, options):
    """``user`` with ``--options`` applied. A value that is a mapping replaces the YAML's mapping
    instead of merging into it: ``anno_dir={train: X}`` means only X, not X plus the YAML's val."""
    merged = OmegaConf.merge(user, parse_options(options))
    for option in options or []:
        key = option.split("=", 1)[0]
        value = OmegaConf.select(parse_options([option]), key)
        if isinstance(value, DictConfig):
            OmegaConf.update(merged, key, value, merge=False, force_add=True)
    return merged


class Config:
    """A merged, validated experiment: ``config.model_cfg``, ``datasets_cfg``, ``run_cfg``.

    Args:
        args: anything with ``cfg_path`` and ``options`` attributes (the parsed command line), as in
            LAVIS; or use :meth:`from_file`.

    Raises:
        ConfigError: listing every unknown key, bad value and inconsistency found.
    """

    def __init__(self, args, trained_model=False):
        """``trained_model``: the model is used, not trained (evaluation, calibration, chat, mode
        selection): with ``model.ckpt`` naming one of our runs, its model section is the run's."""
        from video_llama.common.plugins import load_plugins

        self.cfg_path = Path(args.cfg_path).resolve()
        self.options = list(getattr(args, "options", None) or [])
        user = merge_options(load_yaml(self.cfg_path), self.options)
        # Plugins register before anything is resolved: their default YAMLs merge like built-ins.
        load_plugins(getattr(args, "plugins", None) or [], "--plugins")
        yaml_plugins = user.get("plugins") or []
        if isinstance(yaml_plugins, (ListConfig, list)):
            load_plugins([str(p) for p in yaml_plugins], f"plugins: in {self.cfg_path}", base_dir=self.cfg_path.parent)
        uses_trained = trained_model or OmegaConf.select(user, "run.evaluate") is True
        if uses_trained:
            user = adopt_trained_model(user, self.cfg_path.parent, str(self.cfg_path))
        self.config = build_config(user, base_dir=self.cfg_path.parent, source=str(self.cfg_path), trains=not uses_trained)

    @classmethod
    def from_file(cls, cfg_path, options=None, plugins=None, trained_model=False):
        class _Args:
            pass

        args = _Args()
        args.cfg_path, args.options, args.plugins = cfg_path, options, plugins
        return cls(args, trained_model)

    @property
    def model_cfg(self):
        return self.config.model

    @property
    def datasets_cfg(self):
        return self.config.datasets

    @property
    def run_cfg(self):
        return self.config.run

    def to_yaml(self):
        return OmegaConf.to_yaml(self.config)


# --------------------------------------------------------------------------- building


def build_config(user, base_dir=None, source=None, trains=True):
    """Merge defaults under ``user`` (a DictConfig), validate, and return the resolved config.
    ``trains``: the config trains a model (not only evaluates one), so its train and eval processors
    must agree."""
    problems = []
    for key in user:
        if key not in TOP_LEVEL_KEYS:
            problems.append(_unknown(str(key), key, TOP_LEVEL_KEYS))

    user_model = user.get("model") or OmegaConf.create({})
    user_datasets = user.get("datasets") or OmegaConf.create({})
    user_run = user.get("run") or OmegaConf.create({})
    for name, section in (("model", user_model), ("datasets", user_datasets), ("run", user_run)):
        if not isinstance(section, DictConfig):
            problems.append(f"{name}: must be a mapping of keys, got {section!r}")
    if problems:
        raise ConfigError(problems, source)

    model = _model_section(user_model, problems)
    model_cls = registry.mapping["model"].get(model.get("arch", "video_llama"))
    follows = {key: model.get(model_key) for key, model_key in getattr(model_cls, "PROCESSOR_KEYS", {}).items()}
    datasets = _datasets_section(user_datasets, problems, follows)
    if trains:
        problems.extend(_validation_sees_other_pixels(user_datasets, datasets))
    run_defaults = load_yaml(DEFAULT_RUN_CONFIG)
    _check_keys(user_run, run_defaults.run, "run", problems)
    run = OmegaConf.merge(run_defaults.run, user_run)
    plugins = user.get("plugins", run_defaults.plugins)
    if plugins is None:
        plugins = []
    if not isinstance(plugins, (ListConfig, list)) or not all(isinstance(p, str) for p in plugins):
        problems.append(f"plugins: must be a list of module names or .py paths, got {plugins!r}")

    config = OmegaConf.create({"model": model, "datasets": datasets, "run": run, "plugins": plugins})
    _check_run(config, problems)
    _fill_derived(config)
    problems.extend(consistency_problems(config))
    if problems:
        raise ConfigError(problems, source)
    _resolve_paths(config, base_dir)
    problems.extend(split_problems(config))
    if problems:
        raise ConfigError(problems, source)
    return config


def adopt_trained_model(user, base_dir=None, source=None):
    """``user`` with the model section of the run ``model.ckpt`` names (one of our run or checkpoint
    folders): a trained model is rebuilt as it was trained, so an evaluation YAML needs no model
    section, and one that restates it differently cannot break the load. The user's values stand
    only for the model class's ``DEPLOYMENT_KEYS`` (files, precision, loading); other differing
    values are reported once and ignored, and so are the datasets' keys that the model decides
    (their builders' ``MODEL_BOUND_KEYS``). Any other ``model.ckpt`` leaves ``user`` as it is."""
    from video_llama.common.run_folder import CONFIG, checkpoint_in_use

    model = user.get("model")
    ckpt = model.get("ckpt") if isinstance(model, DictConfig) else None
    if not ckpt or ckpt == "random":
        return user
    folder = checkpoint_in_use(resolve_path(ckpt, base_dir))
    if not (folder / CONFIG).is_file():  # a weights file, a Hugging Face folder: the YAML describes the model
        return user
    saved = OmegaConf.load(folder / CONFIG).get("model") or OmegaConf.create({})
    try:
        model_cls = registry.get_model_class(saved.get("arch", "video_llama"))
        known = model_cls.default_config(saved.get("model_type", model_cls.DEFAULT_MODEL_TYPE))
    except (RegistryError, KeyError):
        return user  # the saved arch is not registered (a plugin not loaded): the YAML's, and its error
    free = model_cls.DEPLOYMENT_KEYS
    saved = OmegaConf.create({key: saved[key] for key in saved if key in known})  # keys this version still has
    saved.merge_with({key: None for key in model_cls.RUN_HOLDS if key in saved})  # the run holds their weights
    ignored = [f"model.{key}: {model[key]!r} (the run's: {saved[key]!r})" for key in model
               if key not in free and key in saved and model[key] != saved[key]]
    kept = OmegaConf.merge(model, saved, {key: model[key] for key in model if key in free})
    adopted = OmegaConf.merge(user, {"model": kept})
    for name, ds in (adopted.get("datasets") or {}).items():
        builder_cls = registry.mapping["builder"].get(name)
        for key in (builder_cls.MODEL_BOUND_KEYS if builder_cls is not None else ()):
            model_key = builder_cls.MODEL_KEYS[key]
            if isinstance(ds, DictConfig) and ds.get(key) is not None and ds[key] != kept.get(model_key):
                ignored.append(f"datasets.{name}.{key}: {ds[key]!r} (follows the run's model.{model_key}: {kept.get(model_key)!r})")
                ds[key] = None
    ignored += _adopt_trained_pixels(adopted, OmegaConf.load(folder / CONFIG).get("datasets") or {})
    if ignored:
        logger.warning("model.ckpt=%s is a run of ours, and the model is rebuilt from its %s; these settings of %s "
                       "differ from the run's and are ignored: %s. An evaluation YAML needs no model section beyond "
                       "model.ckpt, and the keys for where files moved or how the model loads: %s.", ckpt, folder / CONFIG, source or "the config",
                       "; ".join(ignored), ", ".join(k for k in free if k != "ckpt"))
    elif any(key not in free for key in model):  # an older evaluation YAML that restates the model: fine, once said
        logger.info("model.ckpt=%s is a run of ours, and the model is rebuilt from its %s: the model section of %s "
                    "is no longer needed beyond model.ckpt and where files are", ckpt, folder / CONFIG, source or "the config")
    return adopted


def _adopt_trained_pixels(adopted, saved_datasets):
    """Set each dataset's evaluation processor keys that the model was trained to see (the processor
    class's ``MODEL_BOUND_KEYS``: per-clip normalisation, still suppression, ...) to the run's, in
    place; returns the explicitly differing values it overrode, for the warning."""
    ignored = []
    trained_evals = [ds.get("vis_processor", {}).get("eval") for ds in saved_datasets.values() if isinstance(ds, DictConfig)]
    for name, ds in (adopted.get("datasets") or {}).items():
        proc = OmegaConf.select(ds, "vis_processor.eval") if isinstance(ds, DictConfig) else None
        saved = saved_datasets.get(name) if isinstance(saved_datasets.get(name), DictConfig) else None
        trained = OmegaConf.select(saved, "vis_processor.eval") if saved is not None else None
        trained = trained or next((t for t in trained_evals if t is not None), None)
        if proc is None or trained is None:
            continue
        proc_cls = registry.mapping["processor"].get(trained.get("name"))
        # a key the run's config predates: the run was trained with the processor's default
        known = {**proc_cls.default_config(), **trained} if proc_cls is not None else {}
        for key in getattr(proc_cls, "MODEL_BOUND_KEYS", ()):
            value = known.get(key, _UNKNOWN)
            if value is not _UNKNOWN and proc.get(key) != value:
                if proc.get(key) is not None:
                    ignored.append(f"datasets.{name}.vis_processor.eval.{key}: {proc[key]!r} (the run's: {value!r})")
                proc[key] = value
    return ignored


_UNKNOWN = object()  # a model-bound key neither the run nor the processor's defaults know


def _validation_sees_other_pixels(user_datasets, datasets):
    """A dataset whose YAML sets its train processor must validate on frames made the same way (the
    keys both processor classes list in ``MODEL_BOUND_KEYS``): validation on other frames picks the
    best checkpoint by input the model never trained on."""
    problems = []
    for name, ds in datasets.items():
        user_train = OmegaConf.select(user_datasets, f"{name}.vis_processor.train")
        train, evaluation = (OmegaConf.select(ds, f"vis_processor.{split}") for split in ("train", "eval"))
        if user_train is None or train is None or evaluation is None:
            continue
        classes = [registry.mapping["processor"].get(proc.get("name")) for proc in (train, evaluation)]
        if None in classes:  # an unknown name is reported where the processor is read
            continue
        bound = set.intersection(*(set(getattr(cls, "MODEL_BOUND_KEYS", ())) for cls in classes))
        for key in sorted(k for k in bound if k in train and k in evaluation and train[k] != evaluation[k]):
            path = f"datasets.{name}.vis_processor"
            problems.append(f"{path}.train.{key} is {train[key]!r} but {path}.eval.{key} is {evaluation[key]!r}: "
                            f"validation would see frames the model does not learn from; set {path}.eval.{key} "
                            f"to {train[key]!r} (an evaluation of the run takes the trained value anyway)")
    return problems


def _model_section(user_model, problems):
    arch = user_model.get("arch", "video_llama")
    try:
        model_cls = registry.get_model_class(arch)
    except RegistryError as err:
        problems.append(f"model.arch: {err}")
        return user_model
    model_type = user_model.get("model_type", model_cls.DEFAULT_MODEL_TYPE)
    if model_type not in model_cls.PRETRAINED_MODEL_CONFIG_DICT:
        problems.append(_unknown("model.model_type", model_type, model_cls.PRETRAINED_MODEL_CONFIG_DICT, "value"))
        model_type = model_cls.DEFAULT_MODEL_TYPE
    defaults = model_cls.default_config(model_type)
    user_model = _without_legacy_keys(user_model, model_cls.LEGACY_KEYS, problems)
    _check_keys(user_model, defaults, "model", problems)
    return OmegaConf.merge(defaults, user_model)


def _without_legacy_keys(user_model, legacy_keys, problems):
    kept = {}
    for key, value in user_model.items():
        if key not in legacy_keys:
            kept[key] = value
            continue
        legacy = legacy_keys[key]
        if legacy.means and value is True:
            logger.info("model.%s: True sets model.%s (%s)", key, legacy.means, legacy.why)
            kept.setdefault(legacy.means, True)
        elif legacy.accepted is ANY or value == legacy.accepted:
            logger.info("model.%s: accepted for the original configs' sake and ignored (%s)", key, legacy.why)
        else:
            problems.append(f"model.{key}: {value!r} is not supported: {legacy.why}")
    return OmegaConf.create(kept)


def _datasets_section(user_datasets, problems, follows=None):
    merged = {}
    for name, user_ds in user_datasets.items():
        path = f"datasets.{name}"
        try:
            builder_cls = registry.get_builder_class(name)
        except RegistryError as err:
            problems.append(f"{path}: {err}")
            continue
        user_ds = user_ds if user_ds is not None else OmegaConf.create({})
        if not isinstance(user_ds, DictConfig):
            problems.append(f"{path}: must be a mapping, got {user_ds!r}")
            continue
        defaults = builder_cls.default_config()
        _check_keys(user_ds, defaults, path, problems, skip=PROCESSOR_SECTIONS)
        ds = OmegaConf.merge(_without(defaults, PROCESSOR_SECTIONS), _without(user_ds, PROCESSOR_SECTIONS))
        for section in PROCESSOR_SECTIONS:
            ds[section] = _processor_section(defaults.get(section), user_ds.get(section), f"{path}.{section}", problems,
                                             follows)
        merged[name] = ds
    return merged


def _processor_section(defaults, user, path, problems, follows=None):
    """Each split's processor: class defaults ← dataset defaults (same name only) ← user.
    A processor key set nowhere takes the model's value that ``follows`` gives for it (the model
    class's ``PROCESSOR_KEYS``: the frame size its vision encoder is built for)."""
    defaults = defaults or OmegaConf.create({})
    user = user if user is not None else OmegaConf.create({})
    if not isinstance(user, DictConfig):
        problems.append(f"{path}: must map splits (train/eval) to processors, got {user!r}")
        return defaults
    section = {}
    for split in set(defaults) | set(user):
        split_path = f"{path}.{split}"
        user_split = user.get(split) or OmegaConf.create({})
        default_split = defaults.get(split) or OmegaConf.create({})
        name = user_split.get("name", default_split.get("name"))
        if name is None:
            problems.append(f"{split_path}.name: missing; set the processor name")
            continue
        try:
            proc_cls = registry.get_processor_class(name)
        except RegistryError as err:
            problems.append(f"{split_path}.name: {err}")
            continue
        known = OmegaConf.create({"name": name, **proc_cls.default_config()})
        before = len(problems)
        _check_keys(user_split, known, split_path, problems)
        keys_ok = len(problems) == before
        layers = [known]
        if default_split.get("name") == name:
            layers.append(default_split)
        merged = OmegaConf.merge(*layers, user_split)
        if keys_ok:  # the processor's own checks of its values (its Config's __post_init__)
            try:
                proc_cls.Config(**{k: v for k, v in OmegaConf.to_container(merged).items() if k != "name"})
            except (TypeError, ValueError) as err:
                problems.append(f"{split_path}: {err}")
        for key, value in (follows or {}).items():
            if key in merged and value is not None and not any(key in layer for layer in layers[1:] + [user_split]):
                merged[key] = value
        section[split] = merged
    return OmegaConf.create(section)


def _without(cfg, keys):
    return OmegaConf.create({k: v for k, v in cfg.items() if k not in keys})


# --------------------------------------------------------------------------- validation


def _unknown(path, key, known, what="key"):
    guess = closest(key, known)
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"{path}: unknown {what} {key!r}{hint} (known: {', '.join(sorted(map(str, known)))})"


def _check_keys(user, schema, path, problems, skip=()):
    """Every key of ``user`` must exist in ``schema`` (recursively), with a compatible type."""
    for key, value in user.items():
        key_path = f"{path}.{key}"
        if key in skip:
            continue
        if key not in schema:
            problems.append(_unknown(key_path, key, list(schema.keys())))
            continue
        default = schema[key]
        if isinstance(default, DictConfig) and len(default) > 0:
            if isinstance(value, DictConfig):
                _check_keys(value, default, key_path, problems)
            elif value is not None:
                problems.append(f"{key_path}: expected a mapping with keys {list(default.keys())}, got {value!r}")
            continue
        problem = _type_problem(default, value)
        if problem:
            problems.append(f"{key_path}: {problem}")


def _type_problem(default, value):
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return None
    if ok:
        return None
    return f"expected a {type(default).__name__} (default {default!r}), got {value!r}"


# run keys whose default is null (so the defaults file cannot give their type): key → (check, what)
def _is_number(value, kind=(int, float)):
    return isinstance(value, kind) and not isinstance(value, bool)


NULLABLE_RUN_KEYS = {
    "iters_per_epoch": (lambda v: _is_number(v, int) and v >= 1, "a positive integer"),
    "max_grad_norm": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "cpu_threads": (lambda v: _is_number(v, int) and v >= 1, "a positive integer"),
    "keep_checkpoints": (lambda v: _is_number(v, int) and v >= 1, "a positive integer"),
    "pixels_on_device": (lambda v: isinstance(v, bool), "True or False"),
    "temperature": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "decision_threshold": (lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    "resume_ckpt_path": (lambda v: isinstance(v, str), "a path"),
    "labels": (lambda v: isinstance(v, ListConfig) and len(v) > 0 and all(isinstance(x, str) for x in v),
               "a list of label strings, e.g. [Run, Walk]"),
}


def _check_run(config, problems):
    """The run section's values (its keys were checked against configs/default.yaml)."""
    run = config.run
    for key, (ok, what) in NULLABLE_RUN_KEYS.items():
        if run.get(key) is not None and not ok(run[key]):
            problems.append(f"run.{key}: must be {what} or null, got {run[key]!r}")
    for key in ("num_workers", "save_freq_iters", "warmup_steps"):
        if not _is_number(run[key], int) or run[key] < 0:
            problems.append(f"run.{key}: must be an integer >= 0, got {run[key]!r}")
    if not isinstance(run.lr_scales, DictConfig) or not all(_is_number(v) and v >= 0 for v in run.lr_scales.values()):
        problems.append(f"run.lr_scales: must map module names to multipliers, e.g. {{llama_model: 0.1}}, "
                        f"got {run.lr_scales!r}")
    else:
        modules = getattr(_model_class(config), "MODULE_NAMES", None)
        for name in run.lr_scales:
            if modules and str(name).split(".")[0] not in modules:
                problems.append(_unknown(f"run.lr_scales.{name}", str(name).split(".")[0], modules, "module"))
    for key, lookup in (
        ("task", registry.get_task_class),
        ("runner", registry.get_runner_class),
        ("lr_sched", registry.get_lr_scheduler_class),
    ):
        try:
            lookup(run[key])
        except RegistryError as err:
            problems.append(f"run.{key}: {err}")
    if run.nonfinite_loss not in ("stop", "skip"):
        problems.append(_unknown("run.nonfinite_loss", run.nonfinite_loss, ["stop", "skip"], "value"))
    if run.resume not in (None, "auto"):
        problems.append(_unknown("run.resume", run.resume, ["auto"], "value") + "; null starts afresh")
    if run.amp_dtype not in ("bf16", "fp16"):
        problems.append(f"run.amp_dtype: must be bf16 or fp16, got {run.amp_dtype!r}")
    if run.strategy not in ("ddp", "fsdp"):
        problems.append(_unknown("run.strategy", run.strategy, ["ddp", "fsdp"], "value"))
    elif run.strategy == "fsdp" and run.amp and run.amp_dtype == "fp16":
        problems.append("run.strategy=fsdp with run.amp_dtype=fp16: the fp16 loss scaler does not handle sharded "
                        "gradients here; use run.amp_dtype=bf16 (or run.strategy=ddp)")
    heard = [name for name, ds in config.datasets.items() if ds.get("sound")]
    if run.strategy == "fsdp" and heard:
        problems.append(f"datasets.{heard[0]}.sound with run.strategy=fsdp: clips heard and not are asked apart, a number "
                        "of calls that may differ between ranks; evaluate with run.strategy=ddp")
    if run.device not in ("cuda", "cpu") and not str(run.device).startswith("cuda:"):
        problems.append(f"run.device: must be cuda or cpu, got {run.device!r}")
    for key in ("batch_size_train", "batch_size_eval", "accum_grad_iters", "max_epoch"):
        if not isinstance(run[key], int) or run[key] < 1:
            problems.append(f"run.{key}: must be a positive integer, got {run[key]!r}")
    if run.eval_mode not in EVAL_MODES:
        problems.append(_unknown("run.eval_mode", run.eval_mode, EVAL_MODES, "value"))
    for key in ("train_splits", "valid_splits", "test_splits"):
        if not isinstance(run[key], ListConfig) or not all(isinstance(s, str) for s in run[key]):
            problems.append(f"run.{key}: must be a list of split names, e.g. [val], got {run[key]!r}")


def _model_class(config):
    """The registered class of ``model.arch`` (None when it is not registered: already reported)."""
    return registry.mapping["model"].get(config.model.get("arch", "video_llama"))


def _fill_derived(config):
    """Keys whose documented default is another key's value, as the model class and each builder
    declare them, so that each dataset's section holds all that its builder needs (the builder
    reads no model key)."""
    model_cls = _model_class(config)
    if model_cls is not None:
        model_cls.fill_derived(config.model)
    for name, ds in config.datasets.items():
        registry.get_builder_class(name).take_from_model(ds, config.model)


def consistency_problems(config):
    """Settings that are each valid but contradict each other, as the model class and each builder
    find them; every message names both keys."""
    model_cls = _model_class(config)
    problems = model_cls.config_problems(config.model, config.datasets) if model_cls is not None else []
    for name, ds in config.datasets.items():
        problems += registry.get_builder_class(name).config_problems(f"datasets.{name}", ds, config.model)
    return problems


def split_problems(config):
    """Splits that ``run.valid_splits`` / ``run.test_splits`` name but no dataset has, found from
    each builder's ``build_info`` (its ``split_files``) before any data is read. Datasets whose
    builder cannot tell (a plugin without ``anno_dir``) make the check skip."""
    available = {}
    for name, ds in config.datasets.items():
        splitter = getattr(registry.get_builder_class(name), "split_files", None)
        files = splitter(ds.get("build_info")) if splitter else None
        if files is None:
            return []
        available[name] = sorted(files)
    problems = []
    for key in ("valid_splits", "test_splits"):
        for split in config.run[key]:
            if any(split in splits for splits in available.values()):
                continue
            example = next(iter(available), "webvid_instruct")
            files = ", ".join(f"{s}: {s.upper()}.json" for s in [*available.get(example, []), split])
            problems.append(
                f"run.{key} names split {split!r}, which no dataset has (splits: {available}); either give it "
                f"an annotation file, e.g. datasets.{example}.build_info.anno_dir=\"{{{files}}}\" or a folder "
                f"written by `video-llama prepare` (its {split}.json), or remove it from run.{key}"
            )
    return problems


def path_problems(config):
    """Files and folders the run will need, checked before any data or model work."""
    from video_llama.common.run_folder import resolve_checkpoint
    from video_llama.common.hub import weights_file_problem

    problems = []
    model, run = config.model, config.run
    model_cls = _model_class(config)
    for key in (model_cls.CHECKED_PATH_KEYS if model_cls is not None else ()):
        value = model.get(key)
        if value and str(value).startswith(("http://", "https://")):
            problem = weights_file_problem(value, f"model.{key}")
            if problem:
                problems.append(problem)
        elif value and value != "random" and not Path(value).exists():
            problems.append(f"model.{key}: {value} does not exist (looked in {Path.cwd()} and next to the YAML); "
                            f"point it at the file or folder, or set model.{key}=null")
    if run.get("resume_ckpt_path"):
        try:
            resolve_checkpoint(run.resume_ckpt_path)
        except (FileNotFoundError, ValueError) as err:
            problems.append(str(err))
    output = Path(str(run.output_dir))
    existing = next((p for p in [output, *output.parents] if p.exists()), Path("."))
    if existing.exists() and not existing.is_dir():
        problems.append(f"run.output_dir: {existing} is a file, not a folder; choose another run.output_dir")
    elif not os.access(existing, os.W_OK):
        problems.append(f"run.output_dir: cannot write in {existing}; choose a folder you can write to")
    return problems


# --------------------------------------------------------------------------- paths


def resolve_path(value, base_dir=None, fallbacks=()):
    """A relative path as a user expects: the current folder first, then the config's folder,
    then the given fallback folders (e.g. the package's shipped prompts). Unfound paths are
    returned unchanged so that the error at use names what the user wrote."""
    if not value:
        return value
    path = Path(os.path.expanduser(str(value)))
    if path.is_absolute() or path.exists():
        return str(path)
    for folder in ([base_dir] if base_dir else []) + list(fallbacks):
        candidate = Path(folder) / path
        if candidate.exists():
            return str(candidate.resolve())
    return str(value)


def _resolve_paths(config, base_dir):
    """Every file and folder key the model class and the builders declare, found as
    :func:`resolve_path` finds them (prompt files also among the package's own)."""
    def resolve(value, package_fallback=False):
        return resolve_path(value, base_dir, fallbacks=[PACKAGE_DIR] if package_fallback else ())

    model, model_cls = config.model, _model_class(config)
    if model_cls is not None:
        for key in model_cls.PROMPT_PATH_KEYS:
            if model.get(key):
                model[key] = resolve(model[key], package_fallback=True)
        for key in model_cls.PATH_KEYS:
            if model.get(key) and model[key] != "random":
                model[key] = resolve(model[key])
    if config.run.get("resume_ckpt_path"):
        config.run.resume_ckpt_path = resolve(config.run.resume_ckpt_path)
    for name, ds in config.datasets.items():
        registry.get_builder_class(name).resolve_paths(ds, resolve)


# --------------------------------------------------------------------------- runtime checks


def check_runtime(config):
    """Checks that depend on this machine rather than on the YAML: the files the run needs, and
    the device (run by train.py / evaluate.py before building anything)."""
    import torch

    problems = path_problems(config)
    device = str(config.run.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(
            f"run.device is {device!r} but this machine has no usable CUDA GPU; "
            "set run.device=cpu (e.g. --options run.device=cpu)"
        )
    model_cls = _model_class(config)
    if model_cls is not None:
        problems += model_cls.runtime_problems(config.model, device)
    if problems:
        raise ConfigError(problems)
