"""LAVIS-style dataset builders: ``registry.get_builder_class(name)(cfg).build_datasets()``.

A builder knows its default YAML (``DATASET_CONFIG_DICT``) and how to turn its config into one
dataset per split; processors, annotation splits and path checks are shared here.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from video_llama.common.config import CONFIG_DIR
from video_llama.common.registry import registry
from video_llama.common.utils import is_local_spec
from video_llama.conversation.templates import template_in_config
from video_llama.datasets.datasets.base_video_dataset import AnnotationError, BaseVideoDataset, read_quarantine
from video_llama.datasets.datasets.shard_dataset import ShardDataset, shard_counts, shard_splits
from video_llama.processors.audio import SoundProcessor

logger = logging.getLogger(__name__)


class BaseDatasetBuilder:
    # type → default YAML (relative to video_llama/configs, or absolute for plugins). The YAML
    # holds ``datasets: {<registered name>: {...}}`` with every key the builder understands.
    DATASET_CONFIG_DICT = {}
    # the values ``data_type`` may take for this builder (empty: not checked)
    DATA_TYPES = ()
    # what a folder given as ``build_info.anno_dir`` holds: split → file name
    ANNOTATION_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
    # What the data takes from the model: a dataset key left null (or out) follows the model key, so
    # a YAML states each text setting once (dataset key → model key). The BOUND ones may not differ
    # from the model's: the prompt's placeholders and template are what the model was built for.
    MODEL_KEYS = {"tokenizer_name": "llama_model", "max_txt_len": "max_txt_len", "model_type": "template",
                  "num_video_query_token": "num_visual_tokens", "prompt_path": "prompt_path",
                  "prompt_template": "prompt_template"}
    MODEL_BOUND_KEYS = ("model_type", "num_video_query_token")
    # build_info keys naming files or folders (found from the current folder or the YAML's)
    PATH_KEYS = ("videos_dir", "storage", "anno_dir", "shards", "shard_index", "quarantine")

    def __init__(self, cfg=None):
        self.config = cfg if cfg is not None else self.default_config()
        self.wanted_splits = None  # the splits to build (None: all); the task sets it for an evaluation

    @classmethod
    def default_config_path(cls, type="default"):
        return CONFIG_DIR / cls.DATASET_CONFIG_DICT[type]

    @classmethod
    def default_config(cls, type="default"):
        """Every key the builder understands, with its default: the single ``datasets`` entry of its
        default YAML, over those of the builders it derives from (so a subclass's YAML lists only
        what it adds or changes)."""
        layers = []
        for klass in reversed(cls.__mro__):
            own = klass.__dict__.get("DATASET_CONFIG_DICT", {})
            if type in own:
                path = CONFIG_DIR / own[type]
                datasets = OmegaConf.load(path).datasets
                if len(datasets) != 1:
                    raise ValueError(f"{path} must define exactly one dataset, found {list(datasets)}")
                layers.append(next(iter(datasets.values())))
        merged = layers[0]
        for layer in layers[1:]:
            for section in ("vis_processor", "text_processor"):  # another processor: its own keys, not a mix
                for split, proc in (layer.get(section) or {}).items():
                    old = (merged.get(section) or {}).get(split)
                    if old is not None and proc is not None and proc.get("name") not in (None, old.get("name")):
                        del merged[section][split]
            merged = OmegaConf.merge(merged, layer)
        return merged

    # ------------------------------------------------------------------ the config loader's questions
    @classmethod
    def take_from_model(cls, ds_cfg, model_cfg):
        """Fill the keys of ``MODEL_KEYS`` that ``ds_cfg`` leaves null with the model's (in place)."""
        for ds_key, model_key in cls.MODEL_KEYS.items():
            if ds_key in ds_cfg and ds_cfg[ds_key] is None:
                ds_cfg[ds_key] = model_cfg.get(model_key)

    @classmethod
    def config_problems(cls, path, ds_cfg, model_cfg):
        """Messages for settings of ``ds_cfg`` (at ``path``, e.g. datasets.webvid_instruct) that the
        builder cannot read or that contradict the model's; each names the keys and the fix."""
        problems = []
        if cls.DATA_TYPES and ds_cfg.get("data_type") not in cls.DATA_TYPES:
            problems.append(f"{path}.data_type: {ds_cfg.get('data_type')!r}, but the {path.split('.')[-1]} builder "
                            f"reads {' or '.join(cls.DATA_TYPES)}; use a builder for that kind of data or set "
                            f"data_type={cls.DATA_TYPES[0]}")
        info = ds_cfg.get("build_info") or {}
        if ds_cfg.get("sound") and info.get("shards"):
            problems.append(f"{path}.sound reads the clips' sound from their files, which shards do not hold; "
                            "evaluate from annotation files (build_info.anno_dir), or set sound=False")
        if ds_cfg.get("feature_cache") and info.get("shards"):
            problems.append(f"{path}.feature_cache is read beside annotation files (build_info.anno_dir), not shards: "
                            "remove one of build_info.shards and feature_cache")
        if info.get("quarantine") and info.get("shards"):
            problems.append(f"{path}.build_info.quarantine applies to annotation files, not to shards; give it to "
                            "`video-llama export-shards --quarantine` when the shards are made, and set it to null here")
        template_in_config(ds_cfg.get("model_type"), f"{path}.model_type", problems)
        template = registry.mapping["template"].get(model_cfg.get("template"))
        if template is not None and ds_cfg.get("model_type") is not None and ds_cfg.model_type != template.name:
            problems.append(
                f"{path}.model_type is {ds_cfg.model_type!r} but model.template is {template.name!r}: data and "
                f"model must use one prompt template; set model.template={ds_cfg.model_type} (and leave "
                f"{path}.model_type out, it follows the model)"
            )
        tokens = model_cfg.get("num_visual_tokens")
        if "num_video_query_token" in ds_cfg and tokens is not None and ds_cfg.num_video_query_token != tokens:
            problems.append(
                f"{path}.num_video_query_token ({ds_cfg.num_video_query_token}) must equal the tokens the model "
                f"gives the frames ({tokens}: model.num_video_query_token, or model.num_audio_query_token when "
                "the audio branch trains alone; see model.num_visual_tokens): the placeholder count in the prompt"
            )
        if ds_cfg.get("tokenizer_name") and model_cfg.get("llama_model") and ds_cfg.tokenizer_name != model_cfg.llama_model:
            logger.warning("%s.tokenizer_name (%s) differs from model.llama_model (%s); they must share one vocabulary",
                           path, ds_cfg.tokenizer_name, model_cfg.llama_model)
        return problems

    @classmethod
    def resolve_paths(cls, ds_cfg, resolve):
        """The dataset's file and folder keys through ``resolve(value, package_fallback=False)``
        (in place); local shard paths only: URLs and ``pipe:`` specs stay as written."""
        info = ds_cfg.get("build_info") or {}
        for key in cls.PATH_KEYS:
            def local(value, key=key):
                return isinstance(value, str) and (key not in ("shards", "shard_index") or is_local_spec(value))

            value = info.get(key)
            if local(value):
                info[key] = resolve(value)
            elif isinstance(value, ListConfig):
                info[key] = [resolve(v) if local(v) else v for v in value]
            elif isinstance(value, DictConfig):  # {split: file(s)}
                for split, files in value.items():
                    if local(files):
                        value[split] = resolve(files)
                    elif isinstance(files, ListConfig):
                        value[split] = [resolve(f) if local(f) else f for f in files]
        if ds_cfg.get("tokenizer_name"):
            ds_cfg.tokenizer_name = resolve(ds_cfg.tokenizer_name)
        if ds_cfg.get("prompt_path"):
            ds_cfg.prompt_path = resolve(ds_cfg.prompt_path, package_fallback=True)

    # ------------------------------------------------------------------ shared helpers
    @classmethod
    def split_files(cls, build_info):
        """``build_info.anno_dir`` as {split: [files]}: a file or a list is the train split; a folder
        (``video-llama prepare``'s output) gives each of ``ANNOTATION_FILES`` that it holds. None
        when the builder reads no ``anno_dir``. Used at start-up to check the run's split names."""
        if build_info is not None and build_info.get("shards"):
            return shard_splits(build_info.shards)
        if build_info is None or "anno_dir" not in build_info:
            return None
        anno = build_info.anno_dir
        if anno is None:
            return {}
        if isinstance(anno, (DictConfig, dict)):
            return {split: [files] if isinstance(files, str) else list(files) for split, files in anno.items()}
        if isinstance(anno, str) and Path(anno).is_dir():
            return {split: [str(Path(anno) / name)] for split, name in cls.ANNOTATION_FILES.items()
                    if (Path(anno) / name).is_file()}
        return {"train": [anno] if isinstance(anno, str) else list(anno)}

    def without_quarantined(self, records):
        """``records`` less those whose ``video`` the ``build_info.quarantine`` file lists
        (``video-llama check-data``'s): clips known to be unusable are never tried."""
        path = (self.config.get("build_info") or {}).get("quarantine")
        if not path:
            return records
        listed = read_quarantine(path)
        kept = [record for record in records if record["video"] not in listed]
        if len(kept) < len(records):
            logger.info("%s: left out %d quarantined clip(s) listed in %s", getattr(self, "name", type(self).__name__),
                        len(records) - len(kept), path)
        return kept

    def annotation_splits(self):
        """{split: [annotation files]} of this dataset (see :meth:`split_files`)."""
        splits = self.split_files(self.config.build_info)
        if not splits:
            anno = self.config.build_info.anno_dir
            if anno is None:
                raise AnnotationError("build_info.anno_dir is not set: point it at the annotation file(s)")
            raise AnnotationError(f"build_info.anno_dir: the folder {anno} holds none of "
                                    f"{sorted(self.ANNOTATION_FILES.values())}; run `video-llama prepare` or name the files")
        return splits

    def videos_dir(self):
        """``build_info.videos_dir`` (not used when the videos come from ``shards``)."""
        if self.config.build_info.get("shards"):
            return None
        videos_dir = self.config.build_info.get("videos_dir")
        if videos_dir and not Path(videos_dir).is_dir():
            raise FileNotFoundError(f"build_info.videos_dir: {videos_dir} is not a folder; set it to where the videos are")
        return videos_dir

    def processor(self, section, split):
        """The processor for ``split``: ``train`` uses the train entry, other splits ``eval``."""
        procs = self.config.get(section) or {}
        proc_cfg = procs.get("train" if split == "train" else "eval") or procs.get("train")
        if proc_cfg is None:
            return None
        return registry.get_processor_class(proc_cfg.name).from_config(proc_cfg)

    def build_datasets(self):
        """{split: dataset} for every split of the annotations (or shards). Training replaces an
        unreadable clip by the next one; the other splits leave it out and report it."""
        if self.config.build_info.get("shards"):
            return self.build_shard_datasets()
        datasets = {}
        for split, files in self.annotation_splits().items():
            if self.wanted_splits is not None and split not in self.wanted_splits:
                continue
            dataset = self.build_split(split, files)
            if len(dataset) == 0:
                raise AnnotationError(f"split {split!r} has no usable record in {[str(f) for f in files]}; "
                                      "fill the file(s) or remove the split from build_info.anno_dir")
            dataset.substitute_unreadable = split == "train"
            dataset.fixed_windows = split != "train"
            dataset.decode_timeout_s = self.config.get("decode_timeout_s", dataset.decode_timeout_s)
            if split == "train" and self.config.get("feature_cache"):
                dataset.feature_cache = self.open_feature_cache(dataset)
            if split != "train" and self.config.get("sound"):
                dataset.sound_processor = SoundProcessor()
            datasets[split] = dataset
        return datasets

    def open_feature_cache(self, dataset):
        """The ``feature_cache`` the training split reads instead of pixels; refused where the
        frames are not those of one sampling made ahead of time."""
        from video_llama.datasets.datasets.feature_cache import FeatureCache, FeatureCacheError

        folder = self.config.feature_cache
        straddle = getattr(dataset, "straddle", None)
        if dataset.cuts_windows or (straddle is not None and straddle.active):
            raise FeatureCacheError(f"datasets.{getattr(self, 'name', '<dataset>')}.feature_cache ({folder}) holds the features of frames sampled "
                                    "ahead of time; windows cut at random points (vis_processor window_s, straddle_ratio, "
                                    "stop_ratio) need the pixels: remove the cache or those keys")
        cache = FeatureCache(folder)
        missing = [r["video"] for r in dataset.records if r["video"] not in cache.clips and not cache.skipped(r)]
        if missing:
            raise FeatureCacheError(f"feature_cache {folder} holds no features of {len(missing)} clips of the training "
                                    f"split, e.g. {missing[:3]}: it was made from other annotations "
                                    f"({cache.info.get('annotations')}); write it again with `video-llama cache-features`")
        cached_frames = cache.info.get("processor", {}).get("n_frms")
        wanted = getattr(getattr(dataset.vis_processor, "config", None), "n_frms", cached_frames)
        if cached_frames != wanted:
            raise FeatureCacheError(f"feature_cache {folder} holds {cached_frames} frames a clip, the training processor "
                                    f"takes {wanted}: write the cache again with these settings or set n_frms to {cached_frames}")
        logger.info("%s: training reads the frozen encoders' features from %s (%d view(s) a clip; made with %s)",
                    dataset.name, folder, cache.views, cache.info.get("processor", {}).get("name"))
        return cache

    def build_shard_datasets(self):
        """{split: ShardDataset}: the samples of ``build_info.shards``, each turned into a sample by
        this builder's own dataset for that split (built without annotation files)."""
        info = self.config.build_info
        if info.get("anno_dir"):
            raise AnnotationError("build_info sets both shards and anno_dir; keep one (shards hold the annotations)")
        datasets = {}
        for split, urls in shard_splits(info.shards).items():
            if self.wanted_splits is not None and split not in self.wanted_splits:
                continue
            reader = self.build_split(split, [])
            if not isinstance(reader, BaseVideoDataset):
                raise AnnotationError(f"build_info.shards: {type(self).__name__}'s datasets are not video datasets "
                                      f"of the shared base ({type(reader).__name__}); it cannot read shards")
            datasets[split] = ShardDataset(urls, shard_counts(urls, info.get("shard_index")), reader,
                                           shuffle_buffer=info.get("shuffle_buffer", 16), name=f"{reader.name} (shards)")
            datasets[split].substitute_unreadable = split == "train"
            reader.fixed_windows = split != "train"
            reader.decode_timeout_s = self.config.get("decode_timeout_s", reader.decode_timeout_s)
        return datasets

    def build_split(self, split, anno_files):
        """The dataset of ``split`` from its annotation files (none: only the processing, for shards)."""
        raise NotImplementedError

