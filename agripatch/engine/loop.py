"""One resumable training stage: the epoch loop shared by every model agripatch trains.

A stage is a model, its datasets and a `forward(model, batch) -> (logits, targets)` function (or
``(logits, targets, extra_loss)``, a term added to the classification loss, e.g. lesion focus); the loop
brings timm's optimiser/scheduler factories, EMA and Mixup, label smoothing, class weights, AMP and
channels_last on GPU, DDP, rich progress, and checkpoints written atomically after every epoch.
Each epoch reseeds every random source from (seed, stage, epoch), so a run killed after epoch e and
resumed reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    WeightedRandomSampler,
)

from agripatch.device import amp_dtype, autocast
from agripatch.distributed import DistContext, all_reduce_sum, broadcast_buffers
from agripatch.io.torchfile import (
    cpu_state_dict,
    load_matching_state,
    load_object,
    save_object,
)
from agripatch.recipes import RuntimeConfig, StageConfig

STATE_FORMAT = "agripatch-train-state/1"
Batch = Any
ForwardFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, ...]]


@dataclass
class Stage:
    """Everything the loop needs to train and validate one model."""

    name: str
    index: int
    model: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    forward: ForwardFn
    labels: list[int]
    num_classes: int
    collate: Callable | None = None


def stage_seed(seed: int, stage_index: int, epoch: int) -> int:
    """The seed of one epoch of one stage: a pure function, so resumed epochs replay exactly."""
    return (seed * 1_000_003 + stage_index * 10_007 + epoch * 101) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) at once."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _seed_dataset(dataset: Dataset, seed: int) -> None:
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_seed"):
        transform.set_seed(seed)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = int(torch.initial_seed() % (2**31 - 1))
    seed_everything(seed)
    _seed_dataset(info.dataset, seed)


def _class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.as_tensor(weights, dtype=torch.float32)


@dataclass
class _Training:
    """What a stage's updates work on: the model, its optimizer, scheduler and EMA."""

    model: nn.Module
    optimizer: Any
    scheduler: Any
    ema: Any
    updates_per_epoch: int

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


class StageRunner:
    """Trains one `Stage` under a recipe's StageConfig, writing `last.pt` / `best.pt` in `checkpoint_dir`."""

    def __init__(
        self,
        stage: Stage,
        config: StageConfig,
        runtime: RuntimeConfig,
        *,
        ctx: DistContext,
        seed: int,
        workers: int,
        class_balance: str,
        checkpoint_dir: Path,
        progress=None,
        log: Callable[[str], None] = print,
        on_skipped: Callable[[list[str]], None] | None = None,
    ):
        self.stage = stage
        self.config = config
        self.runtime = runtime
        self.ctx = ctx
        self.seed = seed
        self.workers = workers
        self.class_balance = class_balance
        self.checkpoint_dir = Path(checkpoint_dir)
        self.progress = progress
        self.log = log
        self.on_skipped = on_skipped or (lambda paths: None)
        # fp16 autocast (CUDA without bf16) needs loss scaling; with bf16 or fp32 the scaler is a pass-through.
        fp16 = amp_dtype(ctx.device, runtime.amp, runtime.amp_dtype) == torch.float16
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=fp16)

    # ------------------------------------------------------------------------------------- paths
    @property
    def last_path(self) -> Path:
        """Checkpoint of the last completed epoch (full training state)."""
        return self.checkpoint_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        """Weights of the epoch with the best validation accuracy."""
        return self.checkpoint_dir / "best.pt"

    def is_complete(self) -> bool:
        """True when `last.pt` records every epoch of this stage as done."""
        if not self.last_path.is_file():
            return False
        state = load_object(self.last_path, STATE_FORMAT)
        return int(state["epoch"]) >= self.config.epochs and state.get("stage") == self.stage.name

    # ------------------------------------------------------------------------------------- setup
    def _loader(self, dataset: Dataset, *, train: bool, epoch_seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(epoch_seed)
        sampler = None
        shuffle = train
        if train and self.ctx.distributed:
            sampler = DistributedSampler(dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                         shuffle=True, seed=self.seed, drop_last=True)
            shuffle = False
        elif train and self.class_balance == "sampler":
            weights = _class_weights(self.stage.labels, self.stage.num_classes)[self.stage.labels]
            sampler = WeightedRandomSampler(weights.double(), num_samples=len(dataset), replacement=True,
                                            generator=generator)
            shuffle = False
        batch_size = self.config.batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=self.stage.collate,
            worker_init_fn=_worker_init if self.workers > 0 else None,
            generator=generator,
            drop_last=train and len(dataset) > batch_size,
            pin_memory=self.ctx.device.type == "cuda",
        )

    def _criterion(self, mixing: bool) -> nn.Module:
        if mixing:
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()
        weight = None
        if self.class_balance == "loss":
            weight = _class_weights(self.stage.labels, self.stage.num_classes).to(self.ctx.device)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.config.label_smoothing)

    def _mixup(self):
        cfg = self.config
        if cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0:
            return None
        from timm.data import Mixup

        return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
                     label_smoothing=cfg.label_smoothing, num_classes=self.stage.num_classes)

    # ------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Train (or resume) to the configured epochs; returns the final state's summary."""
        t = self._setup()
        start_epoch, best_acc, history = self._resume(t)
        train_model = self._wrap(t.model)
        mixup = self._mixup()
        criterion = self._criterion(mixing=mixup is not None)
        for epoch in range(start_epoch, self.config.epochs):
            row = self._epoch(t, train_model, criterion, mixup, epoch)
            history.append(row)
            improved = row["val_acc"] > best_acc or self.stage.val_set is None
            if improved and self.stage.val_set is not None:
                best_acc = row["val_acc"]
            self._checkpoint(t, epoch, improved, best_acc, history, row["val_acc"])
            self.log(
                f"[{self.stage.name}] epoch {epoch + 1}/{self.config.epochs} loss {row['train_loss']:.4f} "
                f"train_acc {row['train_acc']:.3f} val_acc {row['val_acc']:.3f} ({row['images_per_s']:.1f} img/s)"
            )
        return {"best_acc": best_acc, "history": history}

    def _setup(self) -> _Training:
        """The model on its device, timm's optimizer, per-update scheduler and EMA, as the stage config says."""
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        cfg = self.config
        model = self.stage.model.to(self.ctx.device)
        if self.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = create_optimizer_v2(model, opt=cfg.optimizer.opt, lr=cfg.optimizer.lr,
                                        weight_decay=cfg.optimizer.weight_decay, momentum=cfg.optimizer.momentum)
        scheduler = None
        updates_per_epoch = max(1, len(self._loader(self.stage.train_set, train=True, epoch_seed=0)))
        if cfg.scheduler.sched != "none":
            # Stepped per update, so a one-epoch warm-up ramps the rate within that epoch instead of
            # spending the whole first epoch at warmup_lr.
            scheduler, _ = create_scheduler_v2(
                optimizer, sched=cfg.scheduler.sched, num_epochs=max(cfg.epochs, 1),
                step_on_epochs=False, updates_per_epoch=updates_per_epoch,
                warmup_epochs=cfg.scheduler.warmup_epochs, warmup_lr=cfg.scheduler.warmup_lr,
                min_lr=cfg.scheduler.min_lr, decay_milestones=cfg.scheduler.decay_milestones or [max(cfg.epochs, 1)],
                decay_epochs=max(1, cfg.epochs // 3), decay_rate=cfg.scheduler.decay_rate,
            )
        ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay else None
        return _Training(model, optimizer, scheduler, ema, updates_per_epoch)

    def _resume(self, t: _Training) -> tuple[int, float, list[dict[str, Any]]]:
        """``(first epoch to run, best validation accuracy, history)``: from this stage's last checkpoint, which
        restores the model, optimizer, loss scale and EMA; a fresh start without one."""
        if not self.last_path.is_file():
            return 0, -1.0, []
        state = load_object(self.last_path, STATE_FORMAT)
        if state.get("stage") != self.stage.name:
            from agripatch.errors import CheckpointError

            raise CheckpointError(f"{self.last_path} belongs to stage {state.get('stage')!r}, not {self.stage.name!r}")
        load_matching_state(t.model, state["model"], str(self.last_path))
        t.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])  # fp16 loss scale: resumes replay the same skips
        if t.ema is not None and state.get("ema") is not None:
            load_matching_state(t.ema.module, state["ema"], str(self.last_path))
        start_epoch = int(state["epoch"])
        if start_epoch < self.config.epochs:
            self.log(f"[{self.stage.name}] resuming after epoch {start_epoch}/{self.config.epochs}")
        return start_epoch, float(state["best_acc"]), list(state["history"])

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the updates run through: compiled when the recipe asks, DDP under torchrun."""
        train_model = torch.compile(model) if self.runtime.compile else model
        if self.ctx.distributed:
            device = self.ctx.device
            ids = [device.index] if device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        return train_model

    def _epoch(self, t: _Training, train_model: nn.Module, criterion, mixup, epoch: int) -> dict[str, Any]:
        """One reseeded epoch of updates, then validation (of the EMA weights when there are any): its row."""
        epoch_seed = stage_seed(self.seed, self.stage.index, epoch)
        seed_everything(epoch_seed)
        _seed_dataset(self.stage.train_set, epoch_seed)
        if t.scheduler is not None:
            t.scheduler.step_update(epoch * t.updates_per_epoch)
        loader = self._loader(self.stage.train_set, train=True, epoch_seed=epoch_seed)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        row = self._train_epoch(train_model, t.model, loader, t.optimizer, criterion, mixup, t.ema, epoch,
                                scheduler=t.scheduler, first_update=epoch * t.updates_per_epoch)
        broadcast_buffers(self.ctx, t.model)  # DDP syncs gradients, not BatchNorm statistics
        if t.ema is not None:
            broadcast_buffers(self.ctx, t.ema.module)
        val_start = time.perf_counter()
        row["val_acc"] = self.validate(t.eval_model) if self.stage.val_set is not None else float("nan")
        row["val_seconds"] = time.perf_counter() - val_start
        row["lr"] = t.optimizer.param_groups[0]["lr"]
        return row

    def _checkpoint(self, t: _Training, epoch: int, improved: bool, best_acc: float, history: list[dict[str, Any]],
                    val_acc: float) -> None:
        """Rank 0 writes the best weights when they improved and, every epoch, the full state a resume needs
        (both atomically, so a kill never leaves half a file)."""
        if not self.ctx.is_main:
            return
        if improved:
            save_object({"format": STATE_FORMAT, "stage": self.stage.name, "epoch": epoch + 1,
                         "model": cpu_state_dict(t.eval_model), "val_acc": val_acc}, self.best_path)
        save_object({
            "format": STATE_FORMAT, "stage": self.stage.name, "epoch": epoch + 1,
            "model": cpu_state_dict(t.model), "optimizer": t.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ema": cpu_state_dict(t.ema.module) if t.ema is not None else None,
            "best_acc": best_acc, "history": history,
        }, self.last_path)

    def _train_epoch(self, train_model, model, loader, optimizer, criterion, mixup, ema, epoch, *, scheduler=None,
                     first_update: int = 0) -> dict[str, Any]:
        cfg = self.config
        device = self.ctx.device
        train_model.train()
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        start = time.perf_counter()
        task = None
        if self.progress is not None and self.ctx.is_main:
            task = self.progress.add_task(f"{self.stage.name} {epoch + 1}/{cfg.epochs}", total=len(loader),
                                          info="")
        for step, batch in enumerate(loader):
            batch = self._report_skipped(batch)
            with autocast(device, self.runtime.amp, self.runtime.amp_dtype):
                logits, targets, *extra = self.stage.forward(train_model, batch, mixup=mixup)
                loss = criterion(logits.float(), targets) + sum(extra)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            self.scaler.step(optimizer)
            self.scaler.update()
            if scheduler is not None:
                scheduler.step_update(first_update + step + 1)
            if ema is not None:
                ema.update(model)
            hard = targets.argmax(1) if targets.ndim == 2 else targets
            totals += torch.tensor([loss.item() * len(hard), (logits.argmax(1) == hard).sum().item(), len(hard)],
                                   dtype=torch.float64)
            if task is not None:
                elapsed = time.perf_counter() - start
                self.progress.update(task, advance=1, info=(
                    f"loss {totals[0] / max(totals[2], 1):.3f} acc {totals[1] / max(totals[2], 1):.3f} "
                    f"{totals[2] * self.ctx.world_size / max(elapsed, 1e-9):.1f} samples/s"))
        if task is not None:
            self.progress.remove_task(task)
        totals = all_reduce_sum(self.ctx, totals)
        elapsed = time.perf_counter() - start
        count = max(float(totals[2]), 1.0)
        return {"stage": self.stage.name, "epoch": epoch + 1, "train_loss": float(totals[0]) / count,
                "train_acc": float(totals[1]) / count, "images_per_s": count / max(elapsed, 1e-9),
                "seconds": elapsed}

    def _report_skipped(self, batch):
        if isinstance(batch, dict) and "skipped" in batch:
            skipped = [path for paths in batch["skipped"] for path in paths]
            if skipped:
                self.on_skipped(skipped)
        return batch

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        """Top-1 accuracy of `model` on the stage's validation set (the stage's own forward, eval mode)."""
        was_training = model.training
        model.eval()
        loader = self._loader(self.stage.val_set, train=False, epoch_seed=0)
        correct = total = 0
        for batch in loader:
            batch = self._report_skipped(batch)
            with autocast(self.ctx.device, self.runtime.amp, self.runtime.amp_dtype):
                logits, targets = self.stage.forward(model, batch, mixup=None)
            correct += int((logits.argmax(1) == targets).sum())
            total += len(targets)
        model.train(was_training)
        return correct / max(total, 1)


def kept_weights(checkpoint_dir: Path, keep: str = "best") -> tuple[dict[str, Any], Path, float]:
    """The weights a finished stage hands on, the file they come from and their validation accuracy: the epoch with
    the best validation accuracy (``keep="best"``) or the last epoch (``"last"``; its EMA when the stage keeps one,
    as validation scores it). See ``StageConfig.keep`` for why a stage keeps its last epoch."""
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    path = Path(checkpoint_dir) / f"{keep}.pt"
    state = load_object(path, STATE_FORMAT)
    if keep == "best":
        return state["model"], path, float(state.get("val_acc", float("nan")))
    history = state.get("history") or []
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    return weights, path, float(history[-1]["val_acc"]) if history else float("nan")


def load_kept_weights(checkpoint_dir: Path, model: nn.Module, keep: str = "best") -> float:
    """Load the weights a finished stage hands on (:func:`kept_weights`) into `model`; returns their validation
    accuracy."""
    weights, path, val_acc = kept_weights(checkpoint_dir, keep)
    load_matching_state(model, weights, str(path))
    return val_acc
