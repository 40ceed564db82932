"""Typed run configuration: dataclasses, presets, ``--set key=value`` overrides and validation.

Every field carries a ``help`` string; ``describe()`` turns them into the CLI's ``--help`` text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field

from ado_jax.presets import PRESETS


def _f(default, help: str, **kw):
    """A dataclass field with a help string (and a copied default for mutable values)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    """The Llama transformer's shape and numerics."""

    vocab_size: int = _f(256, "vocabulary size; 0 = take it from the data (builtin bytes 256, corpus tokenizer)")
    d_model: int = _f(64, "residual stream width")
    n_layers: int = _f(2, "number of transformer blocks (stacked and scanned)")
    n_heads: int = _f(4, "query heads")
    n_kv_heads: int = _f(4, "key/value heads (grouped-query attention when < n_heads)")
    d_ff: int = _f(0, "SwiGLU hidden width; 0 means 8/3*d_model rounded up to a multiple of 64")
    max_seq_len: int = _f(2048, "longest sequence the rotary table covers")
    rope_theta: float = _f(10000.0, "rotary embedding base")
    qk_norm: bool = _f(False, "RMS-normalize queries and keys per head")
    tie_embeddings: bool = _f(True, "share one [vocab, d_model] array for input embedding and output projection")
    norm_eps: float = _f(1e-5, "RMSNorm epsilon")
    init_std: float = _f(0.02, "stddev of the normal initialisation of weight matrices")
    param_dtype: str = _f("float32", "dtype parameters are stored and updated in")
    compute_dtype: str = _f("bfloat16", "dtype of activations and matmuls (float32 for exact CPU runs)")
    remat: str = _f("full", "jax.checkpoint policy per block: none | full | dots | dots_no_batch")

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 64 * math.ceil(8 * self.d_model / 3 / 64)


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
    log_every: int = _f(1, "fetch metrics to the host and append them to metrics.jsonl every N steps")
    eval_every: int = _f(50, "per-domain held-out evaluation every N steps (0 disables)")
    eval_batches: int = _f(2, "held-out batches per domain in each evaluation")
    ckpt_every: int = _f(50, "save a checkpoint every N steps (and always at the end)")
    keep_ckpts: int = _f(3, "keep the last N checkpoints")
    progress: bool = _f(True, "show a tqdm progress bar (process 0 only)")


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
    corpus_dir: str = _f("data/corpus", "corpus directory for source=corpus (built there when missing)")
    loader: str = _f("device", "device (tokens on device, sampled inside the step) | host (memmap, prefetched)")
    prefetch: int = _f(1, "host loader: batches drawn ahead in background threads (0 = none)")
    domains: list[str] = _f([], "domain names to use (empty: all)")
    max_bytes_per_domain: int = _f(2_000_000, "builtin source: cap on bytes read per domain")
    heldout_fraction: float = _f(0.05, "builtin source: fraction of each domain kept for held-out eval")


@dataclass
class MixerConfig:
    """Which data-mixture policy runs inside the step, and its hyperparameters."""

    name: str = _f("balanced", "static | natural | balanced | ado | aioli | doremi | odm | skill_it")
    weights: list[float] = _f([], "static mixer: one weight per domain")
    heldout_batches: int = _f(1, "held-out batches per domain evaluated in-step when a mixer asks (aioli, doremi)")
    # ADO (paper 002 defaults)
    gamma1: float = _f(0.1, "ado: EMA rate of the credit history h")
    gamma2: float = _f(0.1, "ado: weight of the new preference rho against the running mean")
    s: float = _f(0.5, "ado: credit exponent in lambda ~ h^s")
    delta_min: float = _f(0.01, "ado: minimum probability per domain (App. C clipping)")
    fit_every: int = _f(1000, "ado: refit the scaling laws every N steps")
    fit_start: int = _f(500, "ado: first fit at this step (prior used before)")
    prior: str = _f("natural", "ado: prior mu: natural | uniform")
    skip_first: int = _f(500, "ado: steps left out of the fitter's history (paper: 500)")
    subsample_every: int = _f(10, "ado: keep every N-th step in the history (paper: 10)")
    history_len: int = _f(512, "ado: history slots per domain (stride doubles when full)")
    smoothing: str = _f("none", "ado: none (paper) | savgol (reference: Savitzky-Golay 101/3)")
    credit: str = _f("paper", "ado: paper | reference | reference_v0 credit assignment")
    clip: str = _f("paper", "ado: paper (clip after mixing) | reference (clip rho first)")
    # Aioli (paper 004 defaults); rounds span train.decay_steps, the run's planned length
    rounds: int = _f(20, "aioli/skill_it: rounds T over train.decay_steps")
    sweeps: int = _f(4, "aioli: LearnParams sweeps k over the D smoothed one-hot mixtures")
    delta: float = _f(0.128, "aioli: fraction of each round spent in LearnParams")
    aioli_eps: float = _f(0.75, "aioli: smoothing eps of the one-hot mixtures (1-eps)*onehot + eps*uniform")
    eta: float = _f(0.2, "aioli/skill_it: exponentiated-gradient step size eta")
    gamma: float = _f(-1.0, "aioli: EMA gamma on the normalized A (-1: none)")
    variant: str = _f("full", "aioli: full | static (AIOLI-STATIC) | diagonal (AIOLI-DIAGONAL)")
    init_steps: int = _f(0, "aioli: steps on the prior (mixer.prior) before the first round (Aioli+method); "
                            "0: one step on uniform, whose held-out loss is round 1's baseline")
    # DoReMi, ODM, Skill-It
    reference_losses: list[float] = _f([], "doremi: per-domain losses of a reference model (e.g. eval_loss of a balanced run)")
    doremi_eta: float = _f(1.0, "doremi: exponentiated-gradient step size (Xie et al.: 1)")
    doremi_smoothing: float = _f(1e-3, "doremi: weight of the uniform mixture mixed in each step")
    use_heldout: bool = _f(False, "doremi: excess loss on in-step held-out batches instead of training losses")
    odm_reward: str = _f("smoothed", "odm: smoothed (moving average, Aioli's statement) | cumulative (EXP3 reference)")
    odm_alpha: float = _f(0.9, "odm: smoothing alpha of the moving-average reward")
    graph: list = _f([], "skill_it: [D, D] skills graph as a JSON list of rows (ado_jax.mixing.skills_graph)")


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mixer: MixerConfig = field(default_factory=MixerConfig)

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` in a run directory holds)."""
        return dataclasses.asdict(self)


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
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        raise ValueError(f"unknown config key {key!r}; {section_name} has: {sorted(hints)}")
    setattr(section, name, _convert(value, hints[name], key))


def load_config(preset_or_file: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Builds a validated ``Config`` from a preset name or JSON file plus ``key=value`` overrides."""
    cfg = Config()
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
    for section, values in tree.items():
        if not isinstance(values, dict):
            raise ValueError(f"config section {section!r} must be an object, got {values!r}")
        for name, value in values.items():
            _apply(cfg, f"{section}.{name}", value)
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        _apply(cfg, key.strip(), value.strip())
    validate(cfg)
    return cfg


def validate(cfg: Config, num_devices: int | None = None) -> None:
    """Raises ValueError naming the first inconsistent or out-of-range field."""
    from ado_jax.mixing.from_config import MIXERS  # (the mixer's hyperparameters: build_mixer)

    m, t, mesh = cfg.model, cfg.train, cfg.mesh
    if cfg.mixer.name not in MIXERS:
        raise ValueError(f"mixer.name={cfg.mixer.name!r}: expected one of {', '.join(MIXERS)}")
    positive = {"model.d_model": m.d_model, "model.n_layers": m.n_layers,
                "model.n_heads": m.n_heads, "model.n_kv_heads": m.n_kv_heads, "train.steps": t.steps,
                "train.batch_size": t.batch_size, "train.seq_len": t.seq_len, "train.grad_accum": t.grad_accum,
                "train.decay_steps": t.decay_steps, "train.log_every": t.log_every,
                "train.ckpt_every": t.ckpt_every, "train.keep_ckpts": t.keep_ckpts}
    for key, v in positive.items():
        if v <= 0:
            raise ValueError(f"{key}={v}: must be positive")
    nonneg = {"train.lr": t.lr, "train.weight_decay": t.weight_decay, "train.grad_clip": t.grad_clip,
              "train.warmup_steps": t.warmup_steps, "train.eval_every": t.eval_every, "model.d_ff": m.d_ff}
    for key, v in nonneg.items():
        if not v >= 0:
            raise ValueError(f"{key}={v}: must be non-negative")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ValueError(f"train.min_lr_ratio={t.min_lr_ratio}: must be in [0, 1]")
    for key, v in {"train.b1": t.b1, "train.b2": t.b2}.items():
        if not 0 <= v < 1:
            raise ValueError(f"{key}={v}: must be in [0, 1)")
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
    if t.batch_size % t.grad_accum:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if m.vocab_size < 0:
        raise ValueError(f"model.vocab_size={m.vocab_size}: must be positive, or 0 to take it from the data")
    if cfg.data.loader not in ("device", "host"):
        raise ValueError(f"data.loader={cfg.data.loader!r}: expected device | host")
    if cfg.data.prefetch < 0:
        raise ValueError(f"data.prefetch={cfg.data.prefetch}: must be non-negative")
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


def describe(markdown: bool = False) -> str:
    """Every config field with its type, default and help: text for ``ado-jax train --help``, or
    with ``markdown=True`` one table per section (``docs/config.md`` embeds it; a test keeps it current)."""
    lines = [] if markdown else ["config fields (set with --set section.field=value):"]
    for section in dataclasses.fields(Config):
        sub = section.default_factory()
        rows = [(f"{section.name}.{f.name}", repr(getattr(sub, f.name)), f.metadata.get("help", ""))
                for f in dataclasses.fields(sub)]
        if markdown:
            lines += [f"## `{section.name}`", "", str(type(sub).__doc__), "", "| field | default | meaning |", "|---|---|---|"]
            lines += [f"| `{key}` | `{default}` | {text.replace('|', '&#124;')} |" for key, default, text in rows]
            lines.append("")
        else:
            lines.append(f"  [{section.name}] {type(sub).__doc__}")
            lines += [f"    {key} = {default}: {text}" for key, default, text in rows]
    if not markdown:
        lines.append("presets: " + ", ".join(PRESETS))
    return "\n".join(lines)
