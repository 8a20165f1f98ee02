"""The config schema, and the one bridge from conf/ (Hydra) to params.yaml (DVC).

Hydra composes conf/ into a plain tree; DVC tracks the keys of params.yaml each stage reads.
Everything is validated here, before any work, so a misspelt key, a wrong type or an
impossible value fails with one line that names the key and the file it came from.
"""

from __future__ import annotations

import datetime as dt
import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from closedloop.config.online import ONLINE_GROUPS, validate_online
from closedloop.errors import ConfigError
from closedloop.paths import CONF_DIR, PARAMS

GROUPS = ("dataset", "model", "trainer", "metrics", "slices", "drift", "gates", "serve")
SOURCES = ("seattle_weather", "digits", "synthetic")
ARCHS = ("mlp", "cnn")
SPLITS = ("train", "val", "production")


# --------------------------------------------------------------------------- schema
@dataclass
class DateRange:
    start: str = MISSING
    end: str = MISSING


@dataclass
class Fractions:
    train: float = MISSING
    val: float = MISSING
    production: float = MISSING


@dataclass
class SplitConfig:
    strategy: str = "time"
    train: DateRange | None = None
    val: DateRange | None = None
    production: DateRange | None = None
    fractions: Fractions | None = None


@dataclass
class SyntheticConfig:
    n_samples: int = 5000
    n_features: int = 20
    n_informative: int = 10
    n_classes: int = 3
    class_sep: float = 1.0
    seed: int = 0


@dataclass
class FeedbackConfig:
    enabled: bool = True
    eval_days: int = 90


@dataclass
class DatasetConfig:
    name: str = MISSING
    source: str = MISSING
    target: str = MISSING
    time_column: str | None = None
    features: list[str] | None = None
    classes: list[str] | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    synthetic: SyntheticConfig | None = None
    personal: dict[str, str] = field(default_factory=dict)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)


@dataclass
class MLPConfig:
    name: str = MISSING
    arch: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32


@dataclass
class CNNConfig:
    name: str = MISSING
    arch: str = "cnn"
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    channels: list[int] = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    hidden_size: int = 64
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64


@dataclass
class TrainerConfig:
    name: str = MISSING
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 20
    deterministic: bool = True
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 50
    enable_progress_bar: bool = False
    num_workers: int = 0


@dataclass
class MetricsConfig:
    name: str = MISSING
    splits: list[str] = field(default_factory=lambda: ["val", "production"])
    ece_bins: int = 15
    calibration_bins: int = 10
    compare: list[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])
    confidence_level: float = 0.95
    n_resamples: int = 1000
    bootstrap_seed: int = 0


@dataclass
class SliceSpec:
    name: str = MISSING
    by: str = MISSING
    column: str | None = None
    bins: list[float] | None = None


@dataclass
class SlicesConfig:
    name: str = MISSING
    slices: list[SliceSpec] = field(default_factory=list)


@dataclass
class DriftConfig:
    name: str = MISSING
    row_cap: int = 50_000
    seed: int = 0
    columns: list[str] | None = None
    include_target: bool = True
    include_prediction: bool = True
    drift_share: float = 0.5


@dataclass
class ChampionCheck:
    metric: str = MISSING
    mode: str = "non_inferiority"
    margin: float = 0.0


@dataclass
class SliceRegression:
    metric: str = "accuracy"
    max_drop: float = 0.05


@dataclass
class DriftGate:
    max_drifted_share: float | None = None
    columns: list[str] = field(default_factory=list)


@dataclass
class GatesConfig:
    name: str = MISSING
    split: str = "production"
    min_samples: int = 100
    min_slice_samples: int = 30
    floors: dict[str, float] = field(default_factory=dict)
    vs_champion: list[ChampionCheck] = field(default_factory=list)
    slice_regression: SliceRegression | None = None
    beat_baseline: str | None = "accuracy"
    drift: DriftGate = field(default_factory=DriftGate)
    max_data_age_days: int | None = None
    as_of: str | None = None
    first_model: str = "floors_only"


@dataclass
class PrivacyConfig:
    key_env: str = "CLOSEDLOOP_HASH_KEY"


@dataclass
class ServeConfig:
    name: str = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    store_url: str = "sqlite:///feedback.db"
    batch_size: int = 256
    flush_interval_ms: int = 50
    max_body_bytes: int = 65_536
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


MODEL_SCHEMAS = {"mlp": MLPConfig, "cnn": CNNConfig}
GROUP_SCHEMAS = {
    "dataset": DatasetConfig,
    "trainer": TrainerConfig,
    "metrics": MetricsConfig,
    "slices": SlicesConfig,
    "drift": DriftConfig,
    "gates": GatesConfig,
    "serve": ServeConfig,
}
COMPARABLE = ("accuracy", "macro_f1")
SLICE_KINDS = ("month", "season", "class", "range", "column")


# ----------------------------------------------------------------------- composition
def compose(overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> dict:
    """Compose conf/ with Hydra overrides into a validated plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    conf_dir = Path(conf_dir).resolve()
    try:
        with initialize_config_dir(str(conf_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e, conf_dir)) from None
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = f" ({lines[-1]})" if len(lines) > 1 else ""
        raise ConfigError(f"{_rel(conf_dir)}: {lines[0]}{detail}") from None
    return validate(OmegaConf.to_container(cfg, resolve=True), conf_dir)


def _missing_option_message(e: Exception, conf_dir: Path) -> str:
    """Turn Hydra's multi-line 'Could not find' into one line listing the valid options."""
    text = str(e)
    for group in (*GROUPS, *ONLINE_GROUPS, "experiment"):
        marker = f"'{group}/"
        if marker in text:
            option = text.split(marker, 1)[1].split("'", 1)[0]
            valid = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            return (
                f"unknown {group} '{option}': {_rel(conf_dir)}/{group}/{option}.yaml does not exist "
                f"(choose from: {', '.join(valid)})"
            )
    return text.strip().splitlines()[0]


# ------------------------------------------------------------------------ validation
def validate(raw: dict, conf_dir: Path = CONF_DIR) -> dict:
    """Check a composed config against the schema; return it with defaults filled in."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{_rel(conf_dir)}/config.yaml: the config must be a mapping")
    root_file = f"{_rel(conf_dir)}/config.yaml"
    known = {*GROUPS, "seed"}
    for key in raw:
        if key in ONLINE_GROUPS:
            continue  # optional groups, validated by closedloop.config.online below
        if key not in known:
            raise ConfigError(f"{root_file}: unknown key '{key}'{_suggest(key, known)}")
    for key in known:
        if key not in raw or raw[key] is None:
            raise ConfigError(f"{root_file}: missing '{key}'")
    if not isinstance(raw["seed"], int) or isinstance(raw["seed"], bool):
        raise ConfigError(f"{root_file}: seed: expected an integer, got {raw['seed']!r}")

    out: dict[str, Any] = {"seed": raw["seed"]}
    for group in GROUPS:
        node = raw[group]
        if not isinstance(node, dict):
            raise ConfigError(f"{root_file}: '{group}' must be a mapping, got {node!r}")
        where = f"{_rel(conf_dir)}/{group}/{node.get('name', '?')}.yaml"
        if group == "model":
            arch = node.get("arch")
            if arch not in MODEL_SCHEMAS:
                raise ConfigError(
                    f"{where}: model.arch: unknown architecture {arch!r} (choose from: {', '.join(ARCHS)})"
                )
            schema = MODEL_SCHEMAS[arch]
        else:
            schema = GROUP_SCHEMAS[group]
        typed = _typed(schema, node, group, where)
        problems = CHECKS[group](typed)
        if problems:
            key, msg = problems[0]
            raise ConfigError(f"{where}: {group}.{key}: {msg}")
        out[group] = OmegaConf.to_container(OmegaConf.structured(typed))
    out.update(validate_online(raw, _rel(conf_dir)))
    return out


def _typed(schema: type, node: dict, group: str, where: str) -> Any:
    """Merge a node into its dataclass schema: unknown keys and wrong types fail here."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        key = str(e.full_key or e.key)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        choices = _field_names(schema, parent)
        return _raise(
            f"{where}: unknown key '{group}.{key}'{_suggest(key.rsplit('.', 1)[-1], choices)}"
        )
    except OmegaConfBaseException as e:
        key = str(e.full_key or e.key or "")
        msg = str(getattr(e, "msg", e)).strip().splitlines()[0]
        return _raise(f"{where}: {group}.{key}: {msg}")


def _raise(msg: str):
    raise ConfigError(msg)


def _field_names(schema: type, dotted: str) -> set[str]:
    node = OmegaConf.structured(schema)
    for part in [p for p in dotted.split(".") if p]:
        node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:
            return set()
    return set(node.keys()) if isinstance(node, DictConfig) else set()


def _suggest(key: str, choices: set[str] | Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------- value checks per group
def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def _check_dataset(d: DatasetConfig) -> list[tuple[str, str]]:
    if d.source not in SOURCES:
        return [("source", f"unknown source {d.source!r} (choose from: {', '.join(SOURCES)})")]
    if d.classes is not None and len(set(d.classes)) != len(d.classes):
        return [("classes", "duplicate class names")]
    if d.features is not None and len(set(d.features)) != len(d.features):
        return [("features", "duplicate feature names")]
    if d.feedback.eval_days < 1:
        return [("feedback.eval_days", f"must be >= 1, got {d.feedback.eval_days}")]
    for column, how in d.personal.items():
        if how not in ("hash", "drop"):
            return [(f"personal.{column}", f"must be hash or drop, got {how!r}")]
    if d.source == "synthetic" and d.synthetic is None:
        return [("synthetic", "source=synthetic needs a 'synthetic' block")]
    if d.synthetic is not None:
        s = d.synthetic
        if s.n_samples < 10 or s.n_features < 1 or s.n_classes < 2:
            return [("synthetic", "needs n_samples >= 10, n_features >= 1, n_classes >= 2")]
        if not 1 <= s.n_informative <= s.n_features:
            return [("synthetic.n_informative", "must be between 1 and n_features")]
    sp = d.split
    if sp.strategy == "random":
        f = sp.fractions
        if f is None:
            return [
                ("split.fractions", "strategy=random needs fractions for train, val, production")
            ]
        values = {"train": f.train, "val": f.val, "production": f.production}
        for name, v in values.items():
            if not 0 < v < 1:
                return [(f"split.fractions.{name}", f"must be in (0, 1), got {v}")]
        if abs(sum(values.values()) - 1.0) > 1e-6:
            return [("split.fractions", f"must sum to 1, got {sum(values.values()):g}")]
        return []
    if sp.strategy != "time":
        return [("split.strategy", f"unknown strategy {sp.strategy!r} (choose from: time, random)")]
    if d.time_column is None:
        return [("time_column", "split.strategy=time needs a time_column")]
    ranges = []
    for name in SPLITS:
        r = getattr(sp, name)
        if r is None:
            return [(f"split.{name}", "strategy=time needs a start and end date for every split")]
        start, end = _date(r.start), _date(r.end)
        for which, value, parsed in (("start", r.start, start), ("end", r.end, end)):
            if parsed is None:
                return [(f"split.{name}.{which}", f"{value!r} is not a YYYY-MM-DD date")]
        if end < start:
            return [(f"split.{name}", f"ends ({end}) before it starts ({start})")]
        ranges.append((start, end, name))
    ranges.sort()
    for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(ranges):
        if s2 <= e1:
            return [(f"split.{n2}", f"{s2}..{e2} overlaps split.{n1} ({s1}..{e1})")]
    return []


def _check_model(m: MLPConfig | CNNConfig) -> list[tuple[str, str]]:
    if not m.lr > 0:
        return [("lr", f"must be > 0, got {m.lr}")]
    if m.weight_decay < 0:
        return [("weight_decay", f"must be >= 0, got {m.weight_decay}")]
    if m.batch_size < 1:
        return [("batch_size", f"must be >= 1, got {m.batch_size}")]
    if not 0 <= m.dropout < 1:
        return [("dropout", f"must be in [0, 1), got {m.dropout}")]
    if isinstance(m, MLPConfig) and any(h < 1 for h in m.hidden_sizes):
        return [("hidden_sizes", f"every width must be >= 1, got {m.hidden_sizes}")]
    if isinstance(m, CNNConfig):
        if len(m.input_shape) != 3 or any(s < 1 for s in m.input_shape):
            return [("input_shape", f"must be [channels, height, width], got {m.input_shape}")]
        if m.kernel_size < 1 or m.kernel_size % 2 == 0:
            return [("kernel_size", f"must be a positive odd number, got {m.kernel_size}")]
        if not m.channels or any(c < 1 for c in m.channels) or m.hidden_size < 1:
            return [("channels", "channels and hidden_size must be positive")]
    return []


def _check_trainer(t: TrainerConfig) -> list[tuple[str, str]]:
    if t.max_epochs < 1:
        return [("max_epochs", f"must be >= 1, got {t.max_epochs}")]
    if t.num_nodes < 1 or t.num_workers < 0 or t.log_every_n_steps < 1:
        return [("num_nodes", "num_nodes and log_every_n_steps must be >= 1, num_workers >= 0")]
    if not (t.devices == "auto" or (isinstance(t.devices, int) and t.devices >= 1)):
        return [("devices", f"must be a positive integer or 'auto', got {t.devices!r}")]
    return []


def _check_metrics(m: MetricsConfig) -> list[tuple[str, str]]:
    bad = [s for s in m.splits if s not in SPLITS]
    if bad or not m.splits:
        return [("splits", f"unknown split(s) {bad} (choose from: {', '.join(SPLITS)})")]
    if m.ece_bins < 2 or m.calibration_bins < 2:
        return [("ece_bins", "ece_bins and calibration_bins must be >= 2")]
    bad = [c for c in m.compare if c not in COMPARABLE]
    if bad:
        return [("compare", f"unknown metric(s) {bad} (choose from: {', '.join(COMPARABLE)})")]
    if not 0.5 < m.confidence_level < 1:
        return [("confidence_level", f"must be in (0.5, 1), got {m.confidence_level}")]
    if m.n_resamples < 100:
        return [("n_resamples", f"must be >= 100, got {m.n_resamples}")]
    return []


def _check_slices(s: SlicesConfig) -> list[tuple[str, str]]:
    names = [x.name for x in s.slices]
    if len(set(names)) != len(names):
        return [("slices", f"duplicate slice names in {names}")]
    for i, x in enumerate(s.slices):
        if x.by not in SLICE_KINDS:
            return [
                (
                    f"slices[{i}].by",
                    f"unknown kind {x.by!r} (choose from: {', '.join(SLICE_KINDS)})",
                )
            ]
        if x.by in ("range", "column") and not x.column:
            return [(f"slices[{i}].column", f"by={x.by} needs a column")]
        if x.by == "range" and (not x.bins or len(x.bins) < 2 or sorted(x.bins) != list(x.bins)):
            return [(f"slices[{i}].bins", "by=range needs at least two increasing bin edges")]
    return []


def _check_drift(d: DriftConfig) -> list[tuple[str, str]]:
    if d.row_cap < 100:
        return [("row_cap", f"must be >= 100, got {d.row_cap}")]
    if not 0 < d.drift_share <= 1:
        return [("drift_share", f"must be in (0, 1], got {d.drift_share}")]
    return []


def _check_gates(g: GatesConfig) -> list[tuple[str, str]]:
    if g.split not in SPLITS:
        return [("split", f"unknown split {g.split!r} (choose from: {', '.join(SPLITS)})")]
    if g.min_samples < 1 or g.min_slice_samples < 1:
        return [("min_samples", "min_samples and min_slice_samples must be >= 1")]
    for metric in g.floors:
        if metric not in (*COMPARABLE, "ece"):
            return [
                (f"floors.{metric}", f"unknown metric (choose from: {', '.join(COMPARABLE)}, ece)")
            ]
    for i, c in enumerate(g.vs_champion):
        if c.metric not in COMPARABLE:
            return [
                (
                    f"vs_champion[{i}].metric",
                    f"unknown metric {c.metric!r} (choose from: {', '.join(COMPARABLE)})",
                )
            ]
        if c.mode not in ("superiority", "non_inferiority"):
            return [
                (
                    f"vs_champion[{i}].mode",
                    f"must be superiority or non_inferiority, got {c.mode!r}",
                )
            ]
        if c.margin < 0:
            return [(f"vs_champion[{i}].margin", f"must be >= 0, got {c.margin}")]
    if g.slice_regression is not None and g.slice_regression.metric not in COMPARABLE:
        return [("slice_regression.metric", f"unknown metric {g.slice_regression.metric!r}")]
    if g.beat_baseline is not None and g.beat_baseline not in COMPARABLE:
        return [("beat_baseline", f"unknown metric {g.beat_baseline!r} (or null to disable)")]
    share = g.drift.max_drifted_share
    if share is not None and not 0 <= share <= 1:
        return [("drift.max_drifted_share", f"must be in [0, 1], got {share}")]
    if g.as_of is not None and _date(g.as_of) is None:
        return [("as_of", f"{g.as_of!r} is not a YYYY-MM-DD date")]
    if g.first_model not in ("floors_only", "fail"):
        return [("first_model", f"must be floors_only or fail, got {g.first_model!r}")]
    return []


def _check_serve(s: ServeConfig) -> list[tuple[str, str]]:
    if not 0 < s.port < 65536:
        return [("port", f"must be a TCP port, got {s.port}")]
    if s.batch_size < 1 or s.flush_interval_ms < 1 or s.max_body_bytes < 256:
        return [
            ("batch_size", "batch_size and flush_interval_ms must be >= 1, max_body_bytes >= 256")
        ]
    return []


CHECKS = {
    "dataset": _check_dataset,
    "model": _check_model,
    "trainer": _check_trainer,
    "metrics": _check_metrics,
    "slices": _check_slices,
    "drift": _check_drift,
    "gates": _check_gates,
    "serve": _check_serve,
}


# ------------------------------------------------------------------ params.yaml I/O
HEADER = (
    "# Generated from conf/ by `python -m pipelines.compose` (the `compose` stage of dvc.yaml).\n"
    "# Do not edit: change conf/ and run `dvc repro`, or `dvc exp run -S key=value`.\n"
)


def dump(cfg: dict) -> str:
    """The canonical text of params.yaml: the same config always gives the same bytes."""
    return HEADER + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def load_params(path: Path = PARAMS) -> dict:
    """Read and re-validate params.yaml: every stage trusts nothing it did not check."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run `dvc repro` (or `python -m pipelines.compose`)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return validate(raw)


def under_experiment() -> bool:
    """True inside `dvc exp run`, where DVC has already composed params.yaml."""
    import os

    return bool(os.environ.get("DVC_EXP_NAME"))


def params_for_compose(overrides: list[str] | tuple[str, ...] = (), params: Path = PARAMS) -> dict:
    """What the compose stage writes: under `dvc exp run`, the params.yaml DVC just composed
    with the -S overrides (validated; recomposing would drop them); otherwise conf/ composed."""
    if under_experiment() and not overrides and Path(params).exists():
        return validate(yaml.safe_load(Path(params).read_text()))
    return compose(overrides)
