"""Typed run configuration: dataclasses, presets, ``--set key=value`` overrides and validation.

A run's ``Config`` is assembled from each part's own config: ``ModelConfig`` (beside the model,
``ado_jax.models.llama``), ``TrainConfig``, ``MeshConfig``, ``DataConfig`` (here) and the mixer's
config — one dataclass per mixer, declared in the mixer's module and registered by name
(``ado_jax.mixing.registry``): ``mixer.name`` chooses the class, ``mixer.<field>`` sets that
mixer's fields. Every field carries a ``help`` string; ``describe()`` turns them into the
CLI's ``--help`` text and ``docs/config.md``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from dataclasses import dataclass, field

from ado_jax.metric_sinks import LogConfig
from ado_jax.models.attention import check_kind
from ado_jax.models.llama import ModelConfig
from ado_jax.options import option as _f
from ado_jax.presets import PRESETS

__all__ = ["Config", "DataConfig", "MeshConfig", "ModelConfig", "TrainConfig", "config_from_dict", "describe",
           "load_config", "validate"]
# The flat mixer keys of earlier releases, and what each became (with mixer.name set to the owner).
RENAMED_MIXER_KEYS = {"aioli_eps": "eps", "doremi_eta": "eta", "doremi_smoothing": "smoothing",
                      "odm_reward": "reward", "odm_alpha": "alpha"}


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpoint cadence."""

    steps: int = _f(100, "stop after this many optimizer steps (a rerun with more resumes)")
    batch_size: int = _f(16, "GLOBAL batch size in sequences (never multiplied by hosts)")
    seq_len: int = _f(64, "tokens per training sequence")
    grad_accum: int = _f(1, "micro-batches per step (batch_size must be divisible by it)")
    lr: float = _f(3e-3, "peak AdamW learning rate")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of lr")
    warmup_steps: int = _f(10, "linear warmup steps")
    decay_steps: int = _f(100, "cosine horizon in steps; independent of --steps so a stop/resume keeps the schedule")
    weight_decay: float = _f(0.1, "AdamW decoupled weight decay (matrices only)")
    b1: float = _f(0.9, "AdamW beta1")
    b2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "global-norm gradient clipping threshold (0 disables)")
    seed: int = _f(0, "seed for model init, data sampling and the mixer")
    init_from: str = _f("", "a Hugging Face Llama (or Qwen3, for model.qk_norm) checkpoint folder, local or gs:// "
                            "(config.json + safetensors) whose weights start a new run; the model section must "
                            "match its config.json; a resume ignores it (the run's own checkpoint)")
    log_every: int = _f(1, "fetch metrics to the host and append them to metrics.jsonl every N steps")
    eval_every: int = _f(50, "per-domain held-out evaluation every N steps (0 disables)")
    eval_batches: int = _f(2, "held-out batches per domain in each evaluation")
    harness_every: int = _f(0, "run LM Evaluation Harness tasks (train.harness_tasks) on the model every N steps "
                               "and at the end, into metrics.jsonl (0: never; needs the harness extra)")
    harness_tasks: list[str] = _f(["ado-table1"], "lm-eval task names or the suite ado-table1 (the ADO paper's "
                                                  "seven) for train.harness_every")
    harness_include_path: str = _f("", "a folder of your own lm-eval task YAMLs for train.harness_tasks")
    harness_limit: int = _f(0, "at most N documents per harness task (0: all; a quick look, not a score)")
    ckpt_every: int = _f(50, "save a checkpoint every N steps (and always at the end)")
    keep_ckpts: int = _f(3, "keep the last N checkpoints")
    progress: bool = _f(True, "show a tqdm progress bar (process 0 only)")
    max_skipped_in_row: int = _f(100, "stop the run (exit code 3, checkpoint saved) after this many steps in a row "
                                      "were skipped for a non-finite gradient or update")


@dataclass
class MeshConfig:
    """Device mesh: data parallel x FSDP x tensor parallel."""

    data: int = _f(-1, "data-parallel axis size; -1 fills the devices left by fsdp and tensor")
    fsdp: int = _f(1, "FSDP axis size: params and optimizer state sharded, batch split too")
    tensor: int = _f(1, "tensor-parallel axis size (heads / ff / vocab sharded)")


@dataclass
class DataConfig:
    """Where training sequences come from."""

    source: str = _f("builtin", "builtin (text from the Python install) | corpus (ado-jax corpus build output)")
    corpus_dir: str = _f("data/corpus", "corpus directory for source=corpus (built there when missing), or an "
                                        "object-store URL (gs://bucket/corpus: upload one with `ado-jax corpus "
                                        "upload`; read by byte ranges, never built there)")
    loader: str = _f("device", "device (tokens on device, sampled inside the step) | host (memmap, or chunks read "
                              "ahead from an object store; prefetched)")
    prefetch: int = _f(1, "host loader: batches drawn ahead in background threads (0 = none)")
    chunk_mb: float = _f(8.0, "host loader, object-store corpus: MiB per range read; every sequence is cut from "
                              "such a chunk in memory (a random chunk of the domain, windows uniform inside it)")
    readahead_mb: float = _f(1024.0, "host loader, object-store corpus: cap on the MiB of chunks held in memory "
                                     "(in use, read ahead, in flight), all domains together; at least one chunk "
                                     "per domain plus one")
    reader_threads: int = _f(4, "host loader, object-store corpus: threads fetching chunks ahead of time")
    cache_dir: str = _f("", "host loader, object-store corpus: local folder keeping every chunk read, reused by a "
                            "rerun or resume with the same chunk_mb and seq_len (empty: no cache; it grows up "
                            "to the bytes read)")
    domains: list[str] = _f([], "domain names to train on (empty: all but data.eval_only_domains)")
    eval_only_domains: list[str] = _f([], "domains evaluated only: never trained on nor shown to the mixer "
                                          "(out-of-distribution targets; logged in eval_loss and eval_loss_ood)")
    groups: list[str] = _f([], "merge trained domains into groups the mixer sees as one domain each: "
                               "name=domain+domain+... entries, e.g. [\"tech=code+manpages\"]")
    max_bytes_per_domain: int = _f(2_000_000, "builtin source: cap on bytes read per domain")
    heldout_fraction: float = _f(0.05, "builtin source: fraction of each domain kept for held-out eval")


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mixer: typing.Any = field(default_factory=lambda: _mixer_class("balanced")())  # a registered MixerConfig
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` in a run directory holds);
        the ``mixer`` section starts with its ``name``."""
        tree = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        tree["mixer"] = self.mixer.to_dict()
        return tree


def _mixer_class(name: str) -> type:
    """The config dataclass registered for mixer ``name`` (imports the mixers on first use)."""
    from ado_jax.mixing import config_class

    return config_class(name)


def _convert(value, typ, key: str):
    """Converts a ``--set`` string (or JSON value) to the field's declared type."""
    origin = typing.get_origin(typ) or typ
    if isinstance(value, str) and origin is not str:
        if origin is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{key}={value!r}: expected a boolean (true/false)")
        if origin is list:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = [v.strip() for v in value.split(",") if v.strip()]
            return _convert(parsed, typ, key)
        try:
            return typ(value)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected {typ.__name__}") from None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r}: expected a list")
        (item,) = typing.get_args(typ) or (None,)
        return [v if item is None else _convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, origin) or (origin is int and isinstance(value, bool)):
        raise ValueError(f"{key}={value!r}: expected {getattr(origin, '__name__', origin)}")
    return value


def _apply(cfg: Config, key: str, value) -> None:
    section_name, _, name = key.partition(".")
    if not name:
        raise ValueError(f"config key {key!r}: expected section.field, e.g. train.lr")
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise ValueError(f"unknown config section {section_name!r} in {key!r}; "
                         f"sections: {[f.name for f in dataclasses.fields(cfg)]}")
    if section_name == "mixer" and name == "name":  # choose the mixer: its own config class, defaults
        value = _convert(value, str, key)
        if value != cfg.mixer.name:
            cfg.mixer = _mixer_class(value)()
        return
    hints = typing.get_type_hints(type(section))
    if name not in hints or typing.get_origin(hints[name]) is typing.ClassVar:
        if section_name == "mixer":
            raise ValueError(_unknown_mixer_key(section, name))
        raise ValueError(f"unknown config key {key!r}; {section_name} has: {sorted(hints)}")
    setattr(section, name, _convert(value, hints[name], key))


def _unknown_mixer_key(spec, name: str) -> str:
    """The error for ``mixer.<name>`` that the chosen mixer lacks: its fields, and who has ``name``."""
    from ado_jax.mixing import config_class, mixer_names

    if name in RENAMED_MIXER_KEYS:
        owner = name.split("_")[0]
        return (f"mixer.{name} was renamed mixer.{RENAMED_MIXER_KEYS[name]} (with mixer.name={owner}); "
                "each mixer's fields now belong to that mixer")
    owners = [m for m in mixer_names() if name in {f.name for f in dataclasses.fields(config_class(m))}]
    fields = sorted(f.name for f in dataclasses.fields(spec))
    hint = f"; {name} is a field of mixer {', '.join(owners)} (set mixer.name first)" if owners else ""
    return f"mixer.{name} is not a field of mixer {spec.name!r} (its fields: {fields}){hint}"


def config_from_dict(tree: dict, validate_it: bool = True) -> Config:
    """The ``Config`` of a dict of sections (a preset, ``config.json``, ``Config.to_dict()``):
    defaults, then each given field; ``mixer.name`` first, since it picks the mixer's class."""
    cfg = Config()
    for section, values in tree.items():
        if not isinstance(values, dict):
            raise ValueError(f"config section {section!r} must be an object, got {values!r}")
        for name, value in sorted(values.items(), key=lambda kv: kv[0] != "name"):  # mixer.name first
            _apply(cfg, f"{section}.{name}", value)
    if validate_it:
        validate(cfg)
    return cfg


def load_config(preset_or_file: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Builds a validated ``Config`` from a preset name or JSON file plus ``key=value`` overrides."""
    if preset_or_file in PRESETS:
        tree = PRESETS[preset_or_file]
    elif preset_or_file.endswith(".json"):
        with open(preset_or_file) as f:
            try:
                tree = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"config file {preset_or_file}: not valid JSON ({e})") from None
        if not isinstance(tree, dict):
            raise ValueError(f"config file {preset_or_file}: expected a JSON object of sections, "
                             f"got {type(tree).__name__}")
    else:
        raise ValueError(f"unknown config {preset_or_file!r}: expected a preset {sorted(PRESETS)} or a .json file")
    cfg = config_from_dict(tree, validate_it=False)
    pairs = []
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        pairs.append((key.strip(), value.strip()))
    for key, value in sorted(pairs, key=lambda kv: kv[0] != "mixer.name"):  # a new mixer's fields need its class
        _apply(cfg, key, value)
    validate(cfg)
    return cfg


def validate(cfg: Config, num_devices: int | None = None) -> None:
    """Raises ValueError naming the first inconsistent or out-of-range field."""
    m, t, mesh = cfg.model, cfg.train, cfg.mesh
    _mixer_class(cfg.mixer.name)  # a registered mixer (its hyperparameters are checked by its build())
    positive = {"model.d_model": m.d_model, "model.n_layers": m.n_layers,
                "model.n_heads": m.n_heads, "model.n_kv_heads": m.n_kv_heads, "train.steps": t.steps,
                "train.batch_size": t.batch_size, "train.seq_len": t.seq_len, "train.grad_accum": t.grad_accum,
                "train.decay_steps": t.decay_steps, "train.log_every": t.log_every,
                "train.ckpt_every": t.ckpt_every, "train.keep_ckpts": t.keep_ckpts}
    for key, v in positive.items():
        if v <= 0:
            raise ValueError(f"{key}={v}: must be positive")
    if t.harness_every and not t.harness_tasks:
        raise ValueError(f"train.harness_every={t.harness_every} needs train.harness_tasks (e.g. [\"ado-table1\"])")
    nonneg = {"train.harness_every": t.harness_every, "train.harness_limit": t.harness_limit,
              "train.warmup_steps": t.warmup_steps, "train.eval_every": t.eval_every, "model.d_ff": m.d_ff,
              "train.max_skipped_in_row": t.max_skipped_in_row}
    for key, v in nonneg.items():
        if not v >= 0:
            raise ValueError(f"{key}={v}: must be non-negative")
    # Floats: finite and in a sane range (an infinite or huge lr passes `>= 0` and ruins the weights).
    ranges = {"train.lr": (t.lr, 0, 1, "]"), "train.min_lr_ratio": (t.min_lr_ratio, 0, 1, "]"),
              "train.b1": (t.b1, 0, 1, ")"), "train.b2": (t.b2, 0, 1, ")"),
              "train.weight_decay": (t.weight_decay, 0, 10, "]"), "train.grad_clip": (t.grad_clip, 0, 1e6, "]")}
    for key, (v, lo, hi, close) in ranges.items():
        if not (lo <= v < hi or (close == "]" and v == hi)):
            raise ValueError(f"{key}={v}: must be a finite number in [{lo}, {hi}{close}")
    if t.eval_every and t.eval_batches < 1:
        raise ValueError(f"train.eval_batches={t.eval_batches}: must be at least 1 when train.eval_every > 0 "
                         "(set train.eval_every=0 to turn evaluation off)")
    if m.d_model % m.n_heads:
        raise ValueError(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
    if (m.d_model // m.n_heads) % 2:
        raise ValueError(f"head dim {m.d_model // m.n_heads} must be even for rotary embeddings")
    if m.n_heads % m.n_kv_heads:
        raise ValueError(f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={m.n_kv_heads}")
    if t.seq_len > m.max_seq_len:
        raise ValueError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    for key in ("param_dtype", "compute_dtype"):
        if getattr(m, key) not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model.{key}={getattr(m, key)!r}: expected float32 | bfloat16 | float16")
    if m.remat not in ("none", "full", "dots", "dots_no_batch"):
        raise ValueError(f"model.remat={m.remat!r}: expected none | full | dots | dots_no_batch")
    check_kind(m.attention)
    if m.attention == "xla_blocks":
        raise ValueError("model.attention='xla_blocks' is inference only (its loops have no gradient): train with "
                         "auto | xla | cudnn (the harness scores with xla_blocks on CPU by itself)")
    if t.batch_size % t.grad_accum:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if m.vocab_size < 0:
        raise ValueError(f"model.vocab_size={m.vocab_size}: must be positive, or 0 to take it from the data")
    if cfg.data.loader not in ("device", "host"):
        raise ValueError(f"data.loader={cfg.data.loader!r}: expected device | host")
    if cfg.data.prefetch < 0:
        raise ValueError(f"data.prefetch={cfg.data.prefetch}: must be non-negative")
    for key in ("chunk_mb", "readahead_mb"):
        if not 0 < getattr(cfg.data, key) < float("inf"):
            raise ValueError(f"data.{key}={getattr(cfg.data, key)}: must be a positive number")
    if cfg.data.reader_threads < 1:
        raise ValueError(f"data.reader_threads={cfg.data.reader_threads}: must be at least 1")
    if cfg.data.source not in ("builtin", "corpus"):
        raise ValueError(f"data.source={cfg.data.source!r}: expected builtin | corpus")
    if not 0 < cfg.data.heldout_fraction < 1:
        raise ValueError(f"data.heldout_fraction={cfg.data.heldout_fraction}: must be in (0, 1)")
    for key in ("data", "fsdp", "tensor"):
        v = getattr(mesh, key)
        if v == 0 or v < -1:
            raise ValueError(f"mesh.{key}={v}: must be positive or -1 (fill)")
    if num_devices is not None:
        from ado_jax.sharding import mesh_shape  # late import: keeps config free of jax

        data, fsdp, _ = mesh_shape(mesh, num_devices)
        micro = t.batch_size // t.grad_accum
        if micro % (data * fsdp):
            raise ValueError(f"micro-batch {micro} (train.batch_size={t.batch_size} / grad_accum={t.grad_accum}) "
                             f"is not divisible by the batch axes data*fsdp={data * fsdp}")


def _sections() -> list[tuple[str, str, str, list]]:
    """``(title, key prefix, doc, fields)`` per section: the shared ``mixer`` fields (``name``
    and those of ``MixerConfig``), then one entry per registered mixer with its own fields."""
    from ado_jax.mixing import MixerConfig, config_class, mixer_names

    out = [(f.name, f.name, type(f.default_factory()).__doc__, list(dataclasses.fields(f.default_factory())))
           for f in dataclasses.fields(Config) if f.name != "mixer"]
    name_field = dataclasses.field(default="balanced", metadata={"help": "the mixer: " + " | ".join(mixer_names())})
    name_field.name = "name"
    shared = {f.name for f in dataclasses.fields(MixerConfig)}
    out.append(("mixer", "mixer", "The data-mixture policy inside the step; its fields follow per mixer.",
                [name_field, *dataclasses.fields(MixerConfig)]))
    for name in mixer_names():
        cls = config_class(name)
        out.append((f"mixer.name={name}", "mixer", cls.__doc__,
                    [f for f in dataclasses.fields(cls) if f.name not in shared]))
    return out


def describe(markdown: bool = False) -> str:
    """Every config field with its type, default and help: text for ``ado-jax train --help``, or
    with ``markdown=True`` one table per section and per mixer (``docs/config.md`` embeds it; a
    test keeps it current). A mixer's own fields apply when ``mixer.name`` names that mixer."""
    lines = [] if markdown else ["config fields (set with --set section.field=value):"]
    for title, prefix, doc, fields in _sections():
        doc = " ".join(inspect.cleandoc(str(doc)).split())  # a multi-line docstring as one paragraph
        rows = [(f"{prefix}.{f.name}", repr(f.default_factory() if f.default is dataclasses.MISSING else f.default),
                 f.metadata.get("help", "")) for f in fields]
        if markdown:
            lines += [f"## `{title}`", "", str(doc), "", "| field | default | meaning |", "|---|---|---|"]
            lines += [f"| `{key}` | `{default}` | {text.replace('|', '&#124;')} |" for key, default, text in rows]
            if not rows:
                lines.append("| (none) | | |")
            lines.append("")
        else:
            lines.append(f"  [{title}] {doc}")
            lines += [f"    {key} = {default}: {text}" for key, default, text in rows]
    if not markdown:
        lines.append("presets: " + ", ".join(PRESETS))
    return "\n".join(lines)
