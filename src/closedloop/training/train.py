"""Stage `train`: fit the configured network on the snapshot's train split with Lightning.

Reads params `seed`, `model`, `trainer` and `allowed_targets`, and the snapshot from collect. Writes
models/candidate/ (safetensors weights, config.json, a model card) and the per-epoch
history that `dvc plots` draws.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.profilers import PassThroughProfiler
from torch.utils.data import DataLoader, Sampler, TensorDataset

from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.data.snapshot import read_schema, read_split, tensors
from closedloop.io import atomic_dir, csv_text, write_text
from closedloop.models.encoding import Encoding
from closedloop.models.nets import TASK_LOSS, build_model, count_parameters
from closedloop.models.persist import save_model
from closedloop.numerics import environment, pin, vector_math_watch, warn_vector_math
from closedloop.paths import CANDIDATE_DIR, CARD_JSON, CARD_MD, SNAPSHOT_DIR, TRAIN_HISTORY
from closedloop.training.module import build_module
from closedloop.training.selection import SafetensorsCheckpointIO, callbacks, fit, restore_best

TRAINER_KEYS = (
    "accelerator",
    "devices",
    "strategy",
    "num_nodes",
    "precision",
    "max_epochs",
    "deterministic",
    "gradient_clip_val",
    "log_every_n_steps",
    "enable_progress_bar",
)


class NoProfiler(PassThroughProfiler):
    """Lightning's default, no profiling, without a fresh context manager per hook call:
    Lightning opens some 35 a training step, a few percent of a small net's step. One
    ``nullcontext`` serves them all (it keeps no state)."""

    _none = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._none


class VectorMathCheck(L.Callback):
    """Watches the first training step (forward, backward, optimiser step) for MKL's vector
    math, whose last bits are the CPU's own (closedloop.numerics), and warns if it ran: the
    pinned numerics then cannot keep the weights the same on another machine."""

    def __init__(self) -> None:
        self._watch = None
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._watch is None:
            self._watch = vector_math_watch()
            self._watch.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._watch is not None and not self._done:
            self._done = True
            self._watch.__exit__(None, None, None)
            warn_vector_math(self._watch.seen, "training")


def make_trainer(trainer_cfg: dict, callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """A lightning.Trainer from the trainer config. Lightning writes nothing but the
    model-selection checkpoints (safetensors, in a temporary directory, when ``callbacks``
    holds closedloop.training.selection's)."""
    kwargs = {k: trainer_cfg[k] for k in TRAINER_KEYS}
    return L.Trainer(
        **kwargs,
        logger=False,
        callbacks=callbacks or [],
        plugins=[SafetensorsCheckpointIO()],
        enable_checkpointing=bool(callbacks),
        enable_model_summary=False,
        default_root_dir=None,
        profiler=NoProfiler(),
    )


def fit_encoding(schema: SnapshotSchema, train) -> Encoding:
    """The feature encoding learnt on the training split (closedloop.models.encoding)."""
    types = schema.feature_types
    return Encoding.fit(train, types.numeric, types.categorical, schema.missing)


class Batches(Sampler):
    """Whole batches of row indices, for a DataLoader with ``batch_size=None`` over a
    TensorDataset: each batch is one tensor index (shuffled) or one slice (in order), the
    way a careful plain loop indexes its tensors. A list of 512 Python ints per batch, turned
    back into a tensor, cost more than the rest of Lightning's step on small nets.

    Shuffled, it draws from ``generator`` exactly as ``DataLoader(shuffle=True)``'s
    RandomSampler did, so the same seed gives the same batches and the same weights.
    """

    def __init__(self, rows: int, batch_size: int, shuffle: bool, generator=None):
        self.rows, self.batch_size = rows, batch_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self):
        if not self.shuffle:
            for start in range(0, self.rows, self.batch_size):
                yield slice(start, start + self.batch_size)
            return
        *batches, last = torch.randperm(self.rows, generator=self.generator).split(self.batch_size)
        yield from batches
        # RandomSampler starts a second permutation (for a remainder) as soon as it runs dry:
        # while a short last batch is filled, or when asked for more after a full one.
        # Drawing it at the same moment leaves the generator, and the weights, as they were.
        if len(last) < self.batch_size:
            torch.randperm(self.rows, generator=self.generator)
        yield last
        if len(last) == self.batch_size:
            torch.randperm(self.rows, generator=self.generator)


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for Batches: its batches are already whole."""
    return batch


def batch_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, workers: int, generator=None
) -> DataLoader:
    """Batches of (x, y) rows: shuffled by ``generator`` when one is given, else in order."""
    return DataLoader(
        TensorDataset(x, y),
        batch_size=None,
        sampler=Batches(len(y), batch_size, shuffle=generator is not None, generator=generator),
        generator=generator,
        num_workers=workers,
        collate_fn=whole_batch,
    )


def loaders(
    params: dict, snapshot: Path
) -> tuple[SnapshotSchema, Encoding, DataLoader, DataLoader, tuple[torch.Tensor, torch.Tensor]]:
    schema = read_schema(snapshot)
    train_df = read_split("train", snapshot)
    encoding = fit_encoding(schema, train_df)
    x_tr, y_tr = tensors(train_df, schema, encoding)
    x_va, y_va = tensors(read_split("val", snapshot), schema, encoding)
    workers = params["trainer"]["num_workers"]
    gen = torch.Generator().manual_seed(params["seed"])
    x_tr, y_tr, x_va, y_va = (torch.from_numpy(a) for a in (x_tr, y_tr, x_va, y_va))
    train_dl = batch_loader(x_tr, y_tr, params["model"]["batch_size"], workers, gen)
    val_dl = batch_loader(x_va, y_va, 4096, workers)
    return schema, encoding, train_dl, val_dl, (x_tr, y_tr)


def train(
    params: dict, snapshot: Path = SNAPSHOT_DIR, out_dir: Path = CANDIDATE_DIR
) -> ModelCard | None:
    """Train and save the candidate; return its model card (None on non-zero DDP ranks)."""
    pin(params.get("numerics"))  # the same bytes on any x86-64 CPU (closedloop.numerics)
    L.seed_everything(params["seed"], workers=True, verbose=False)
    schema, encoding, train_dl, val_dl, (x_train, y_train) = loaders(params, snapshot)
    allowed = params["allowed_targets"]
    # The network is built first, right after seeding: its initial weights are the first
    # draws from the seeded generator, so the same config gives the same weights.
    model = build_model(
        params["model"], encoding.width, len(schema.classes), allowed, task=schema.task
    )
    model.set_standardisation(x_train)
    if schema.task == "regression":
        model.set_target_standardisation(y_train)
    lit = build_module(params["model"], model, allowed)
    selection = params["trainer"]["selection"]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="closedloop-ckpt-") as ckpt_dir:
        best, cbs = callbacks(selection, Path(ckpt_dir))
        if environment(params.get("numerics")):
            cbs.append(VectorMathCheck())  # pinned: say if the model defeats it
        trainer = make_trainer(params["trainer"], cbs)
        fit(trainer, lit, train_dl, val_dl, selection["monitor"])
        if not trainer.is_global_zero:
            return None
        selected = restore_best(best, lit)  # ship the best epoch's weights, not the last's
    # Wall time goes to the log, not into the card: the model directory is a DVC output,
    # and the same inputs must give the same bytes (and the same hash in dvc.lock).
    print(f"train: fit took {time.perf_counter() - started:.1f} s", flush=True)

    model = model.cpu().eval()
    config = {
        "task": schema.task,
        "model": params["model"],
        "features": schema.features,
        "encoding": encoding.to_json(),
        "classes": schema.classes,
        "target": schema.target,
        "time_column": schema.time_column,
    }
    history = list(getattr(lit, "history", []))  # a user's module may keep no history
    last = history[-1] if history else {}
    best_row = next((h for h in history if h.get("epoch") == selected.epoch), {})
    card = {
        "model": params["model"],
        "trainer": params["trainer"],
        "seed": params["seed"],
        "dataset": schema.dataset,
        "data_hash": schema.data_hash,
        "train_rows": schema.splits["train"].rows,
        "parameters": count_parameters(model),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "final": {k: v for k, v in last.items() if k != "epoch"},
        "best_epoch": selected.epoch,
        "monitor": selected.monitor,
        "best": {k: v for k, v in best_row.items() if k != "epoch"},
        "stopped_early": trainer.current_epoch < params["trainer"]["max_epochs"],
        "device": str(trainer.strategy.root_device),
        "world_size": trainer.world_size,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
    }
    with atomic_dir(out_dir) as tmp:
        card = ModelCard.model_validate({**card, "weights_sha256": save_model(model, config, tmp)})
        card.write(tmp / CARD_JSON)
        write_text(tmp / CARD_MD, render_card(card, schema))
    write_text(TRAIN_HISTORY, csv_text(history, ["epoch", "train_loss", "val_loss", "val_acc"]))
    return card


def render_card(card: ModelCard, schema: SnapshotSchema) -> str:
    m = card.model
    final = ", ".join(f"{k} {v:.4f}" for k, v in card.final.items()) or "n/a"
    best = ", ".join(f"{k} {v:.4f}" for k, v in card.best.items()) or "n/a"
    stop = "stopped early" if card.stopped_early else "ran every epoch"
    return "\n".join(
        [
            f"# Model card: {m['name']} on {card.dataset}",
            "",
            f"- **Task:** {schema.task}: predict `{schema.target}`"
            + (f" ({', '.join(schema.classes)})" if schema.classes else " (a number)")
            + f" from {len(schema.features)} features.",
            f"- **Network:** `{m['net']['_target_']}`, {card.parameters:,} parameters; "
            f"trained by `{m['module']['_target_']}` with `{m['optimizer']['_target_']}` and "
            f"`{(m['loss'] or {'_target_': TASK_LOSS[schema.task]})['_target_']}`.",
            f"- **Data:** snapshot `{card.data_hash[:12]}`, {card.train_rows:,} training rows.",
            f"- **Training:** {card.epochs} epochs, {card.steps:,} steps on "
            f"`{card.device}` (world size {card.world_size}), seed {card.seed}.",
            f"- **Shipped weights:** epoch {card.best_epoch}, the best on `{card.monitor}` "
            f"({stop}): {best}.",
            f"- **Last epoch:** {final}.",
            f"- **Weights:** `model.safetensors`, sha256 `{card.weights_sha256}`.",
            "",
            "Full configuration and versions: `card.json`. Evaluation: `reports/metrics.json`.",
            "",
        ]
    )
