"""Fixed paths: the contract between dvc.yaml, the stages, CI and the README.

Relative to the working directory, which DVC sets to the repository root.
"""

from pathlib import Path

CONF_DIR = Path("conf")
TEMPLATES = Path("templates")  # a user's own report templates, overriding the library's
PARAMS = Path("params.yaml")
DATA_DIR = Path("data")  # DVC-tracked landing zone for production feedback (data.dvc)
FEEDBACK_DIR = DATA_DIR / "feedback"

SNAPSHOT_DIR = Path("artifacts/snapshot")  # collect: one Parquet file per split + schema.json
SCHEMA = SNAPSHOT_DIR / "schema.json"

CANDIDATE_DIR = Path("models/candidate")  # train: weights, config and model card
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
CARD_JSON = "card.json"
CARD_MD = "card.md"

REPORTS = Path("reports")
QUARANTINE = REPORTS / "quarantine.parquet"  # collect: rejected feedback rows with reasons
TRAIN_HISTORY = REPORTS / "train" / "history.csv"
METRICS = REPORTS / "metrics.json"
EVAL_DIR = REPORTS / "eval"
COMPARISON = REPORTS / "comparison.json"  # evaluate: champion vs candidate, overall and per slice
DRIFT_JSON = REPORTS / "drift.json"
DRIFT_HTML = REPORTS / "drift.html"
GATE = REPORTS / "gate.json"
GATE_SCHEMA = Path("schemas/gate.schema.json")  # the published JSON Schema of reports/gate.json
BENCHMARK_MD = REPORTS / "benchmark.md"  # the PR comment body
BENCHMARK_HTML = REPORTS / "benchmark.html"

REGISTRY = Path("models/registry.yaml")  # which version is production, with history
CHAMPION_DIR = Path("models/champion")  # champion stage: the production model, resolved
CHAMPION_ENTRY = CHAMPION_DIR / "entry.json"
REFERENCE_DATA = (
    "train.parquet"  # a model's training split: in the snapshot and beside the champion
)
ERRORS_TABLE = REPORTS / "errors.parquet"  # errors: one row per misprediction
ERRORS_MD = REPORTS / "errors.md"

ROLLOUT_DIR = CONF_DIR / "rollout"  # conf/rollout/: the rollout's mode and share
ROLLOUT_JSON = REPORTS / "rollout.json"  # closedloop rollout decide: the decision
ROLLOUT_MD = REPORTS / "rollout.md"  # the same, as the rollout PR's body
MONITOR_JSON = REPORTS / "monitor.json"  # closedloop monitor: the windows and their numbers
MONITOR_HTML = REPORTS / "monitor.html"  # the same, as a self-contained page with plots
ALERTS_JSON = REPORTS / "alerts.json"  # closedloop monitor --alerts-out: failing rules
