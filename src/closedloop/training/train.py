"""Stage `train`: fit the configured network on the snapshot's train split with Lightning.

Reads params `seed`, `model`, `trainer` and `allowed_targets`, and the snapshot from collect. Writes
models/candidate/ (safetensors weights, config.json, a model card) and the per-epoch
history that `dvc plots` draws.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from closedloop.artefacts.card import ModelCard
from closedloop.artefacts.snapshot import SnapshotSchema
from closedloop.data.snapshot import read_schema, read_split, tensors
from closedloop.io import atomic_dir, csv_text, write_text
from closedloop.models.nets import build_model, count_parameters
from closedloop.models.persist import save_model
from closedloop.numerics import pin
from closedloop.paths import CANDIDATE_DIR, CARD_JSON, CARD_MD, SNAPSHOT_DIR, TRAIN_HISTORY
from closedloop.training.module import build_module

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


def make_trainer(trainer_cfg: dict) -> L.Trainer:
    """A lightning.Trainer from the trainer config; nothing is written to disk by Lightning."""
    kwargs = {k: trainer_cfg[k] for k in TRAINER_KEYS}
    return L.Trainer(
        **kwargs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=None,
    )


class BatchTensors(TensorDataset):
    """Tensors a DataLoader reads one batch at a time (one index per tensor), not row by row
    and then collated: the per-row path cost more than the training step on small nets."""

    def __getitems__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(rows)
        return tuple(t[index] for t in self.tensors)


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for BatchTensors: its batches are already whole."""
    return batch


def loaders(
    params: dict, snapshot: Path
) -> tuple[SnapshotSchema, DataLoader, DataLoader, torch.Tensor]:
    schema = read_schema(snapshot)
    x_tr, y_tr = tensors(read_split("train", snapshot), schema)
    x_va, y_va = tensors(read_split("val", snapshot), schema)
    bs = params["model"]["batch_size"]
    workers = params["trainer"]["num_workers"]
    gen = torch.Generator().manual_seed(params["seed"])
    train_dl = DataLoader(
        BatchTensors(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        batch_size=bs,
        shuffle=True,
        generator=gen,
        num_workers=workers,
        collate_fn=whole_batch,
    )
    val_dl = DataLoader(
        BatchTensors(torch.from_numpy(x_va), torch.from_numpy(y_va)),
        batch_size=4096,
        num_workers=workers,
        collate_fn=whole_batch,
    )
    return schema, train_dl, val_dl, torch.from_numpy(x_tr)


def train(
    params: dict, snapshot: Path = SNAPSHOT_DIR, out_dir: Path = CANDIDATE_DIR
) -> ModelCard | None:
    """Train and save the candidate; return its model card (None on non-zero DDP ranks)."""
    pin(params.get("numerics"))  # the same bytes on any x86-64 CPU (closedloop.numerics)
    L.seed_everything(params["seed"], workers=True, verbose=False)
    schema, train_dl, val_dl, x_train = loaders(params, snapshot)
    allowed = params["allowed_targets"]
    # The network is built first, right after seeding: its initial weights are the first
    # draws from the seeded generator, so the same config gives the same weights.
    model = build_model(params["model"], len(schema.features), len(schema.classes), allowed)
    model.set_standardisation(x_train)
    lit = build_module(params["model"], model, allowed)
    trainer = make_trainer(params["trainer"])

    started = time.perf_counter()
    trainer.fit(lit, train_dl, val_dl)
    if not trainer.is_global_zero:
        return None
    # Wall time goes to the log, not into the card: the model directory is a DVC output,
    # and the same inputs must give the same bytes (and the same hash in dvc.lock).
    print(f"train: fit took {time.perf_counter() - started:.1f} s", flush=True)

    model = model.cpu().eval()
    config = {
        "model": params["model"],
        "features": schema.features,
        "classes": schema.classes,
        "target": schema.target,
        "time_column": schema.time_column,
    }
    history = list(getattr(lit, "history", []))  # a user's module may keep no history
    last = history[-1] if history else {}
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
    return "\n".join(
        [
            f"# Model card: {m['name']} on {card.dataset}",
            "",
            f"- **Task:** predict `{schema.target}` ({', '.join(schema.classes)}) "
            f"from {len(schema.features)} features.",
            f"- **Network:** `{m['net']['_target_']}`, {card.parameters:,} parameters; "
            f"trained by `{m['module']['_target_']}` with `{m['optimizer']['_target_']}` and "
            f"`{m['loss']['_target_']}`.",
            f"- **Data:** snapshot `{card.data_hash[:12]}`, {card.train_rows:,} training rows.",
            f"- **Training:** {card.epochs} epochs, {card.steps:,} steps on "
            f"`{card.device}` (world size {card.world_size}), seed {card.seed}.",
            f"- **Last epoch:** {final}.",
            f"- **Weights:** `model.safetensors`, sha256 `{card.weights_sha256}`.",
            "",
            "Full configuration and versions: `card.json`. Evaluation: `reports/metrics.json`.",
            "",
        ]
    )
