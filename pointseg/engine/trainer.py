"""Iteration-based trainer: one process or many (torchrun), resumable bit for bit on CPU.

Reproducibility rests on three facts:
- the data order is a pure function of (seed, epoch, rank): a ``DistributedSampler`` permutation
  per epoch, each sample's augmentation seeded by the dataset from (seed, epoch, index), and
  loader generators seeded per epoch, so a resumed run can skip to the exact batch it stopped at;
- every RNG (torch, numpy, python) is saved in the checkpoint and restored on resume;
- the checkpoint holds the full optimizer, scheduler and grad-scaler state.

A fault costs at most the iterations since the last save: at an iteration that saves and
validates, ``last.pth`` is written before validating (a validation that fails is reported, logged
and does not end the run unless ``train.stop_on_val_error``); a requested stop (SIGINT, SIGTERM,
SIGUSR1) ends after the current step with ``last.pth`` written, its validation left for the
resumed run, and the loader processes then stopped; and one process at a time writes a run
folder (``pointseg.utils.lock``).

The loop's own work is the step, the stop and the ``last.pth`` saves; the run log, ``best.pth``
and the snapshots are callbacks (``pointseg.engine.callbacks``), as is anything a run adds.
The config comes checked and frozen from the loader and is used as it is: the trainer hands its
typed sections to the builders, with one ``BuildContext`` of the run's facts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from pointseg.engine.callbacks import (  # noqa: F401 (LAST, BEST and snapshot_name re-exported)
    BEST,
    LAST,
    BestCheckpoint,
    Callback,
    RunLog,
    Snapshots,
    Step,
    snapshot_name,
)
from pointseg.engine.checkpoint import (
    capture_rng_state,
    fixed_tensors,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from pointseg.engine.config import complete_config, save_config, to_plain_dict
from pointseg.engine.distributed import (
    convert_sync_batchnorm,
    init_distributed,
    seed_everything,
    shutdown_workers,
    stop_signals_deferred,
    worker_init_fn,
)
from pointseg.engine.legacy import CHECKPOINT_FORMAT
from pointseg.engine.logger import ERRORS_LOG, TRAIN_LOG, VAL_LOG, RunLogger
from pointseg.engine.optim import build_optimizer, build_scheduler, current_lr
from pointseg.engine.threads import ThreadTuner, candidate_counts, usable_cores
from pointseg.engine.trainer_config import TrainConfig
from pointseg.utils.comm import all_reduce_, barrier, error_elsewhere
from pointseg.utils.errors import one_line
from pointseg.utils.io import remove_temporaries
from pointseg.utils.lock import FolderLock
from pointseg.utils.schema import replace_checked

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
TENSORBOARD_EVENTS = "events.out.tfevents.*"
# What a run writes into its folder: all of it (and only it) goes with --overwrite.
RUN_OUTPUTS = (CHECKPOINT_DIR, CONFIG_FILE, TRAIN_LOG, VAL_LOG, ERRORS_LOG, TENSORBOARD_EVENTS)
# The run-folder files the trainer writes atomically (the checkpoints folder is all its own).
ATOMIC_OUTPUTS = (CONFIG_FILE, TRAIN_LOG, VAL_LOG)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the run stops and the last good checkpoint stays."""


class ValidationFailed(RuntimeError):
    """A validation raised; it ends the run only with ``train.stop_on_val_error``."""


def clear_run_outputs(run_dir: Path) -> None:
    """Delete what a run wrote into ``run_dir`` (:data:`RUN_OUTPUTS`), nothing else (evaluation
    folders, notes)."""
    for pattern in RUN_OUTPUTS:
        for path in sorted(run_dir.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _seed_for(*parts: int) -> int:
    """One 63-bit seed from several integers (seed, epoch, rank) without collisions in practice."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def intra_op_threads(setting: int | str, num_workers: int) -> int:
    """``train.threads`` as the thread count a run starts with: ``auto`` starts with the usable
    cores (divided among torchrun's processes on the node) minus the loader workers, at least 1,
    and then adapts (:class:`pointseg.engine.threads.ThreadTuner`)."""
    if setting == "auto":
        return candidate_counts(usable_cores(), num_workers)[0]
    return int(setting)


def first_non_finite(losses: dict[str, torch.Tensor]) -> tuple[str, float] | None:
    """Name and value of the first non-finite loss term (the named terms before the total)."""
    order = [k for k in losses if k != "loss"] + (["loss"] if "loss" in losses else [])
    for key in order:
        value = losses[key]
        if not bool(torch.isfinite(value.detach()).all()):
            return key, float(value.detach().float().reshape(-1)[0])
    return None


class Trainer:
    """Trains ``build_segmentor(cfg, train=True)`` on ``build_dataset(cfg.data, "train", "train")``.

    The run folder holds ``config.yaml``, ``log.jsonl``, ``val.jsonl``, TensorBoard events,
    ``errors.log`` (tracebacks of failed validations) and ``checkpoints/{last,best}.pth``. Only the
    main process writes, and it holds the folder's lock from construction to the end of
    :meth:`train` (or :meth:`close`): a second trainer on the same folder is refused. A fresh run
    (neither ``resume`` nor ``overwrite``) is refused where checkpoints exist; ``overwrite`` deletes
    the previous run's outputs first.

    ``callbacks`` run after the default ones (:meth:`default_callbacks`: the run log, ``best.pth``,
    the snapshots), in order.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: str | os.PathLike,
        resume: bool = False,
        device: str | None = None,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if resume and overwrite:
            raise ValueError("--resume continues the run folder's checkpoint, --overwrite deletes it: choose one")
        cfg = complete_config(cfg)  # a loaded config as it is; a hand-made one checked once, here
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        self.opts: TrainConfig = cfg.train
        self.total = int(self.opts.iterations)
        self.accumulate = int(self.opts.accumulate)
        self.seed = int(cfg.seed)
        self.num_workers = int(cfg.data.num_workers)
        if self.opts.threads is not None:
            torch.set_num_threads(intra_op_threads(self.opts.threads, self.num_workers))
        self.thread_tuner: ThreadTuner | None = None
        if self.opts.threads == "auto" and self.dist.device.type == "cpu":
            self.thread_tuner = ThreadTuner(candidate_counts(usable_cores(), self.num_workers),
                                            period=int(self.opts.threads_period))
        self.threads = torch.get_num_threads()
        self._step_points = 0  # points of the last step's batches (the thread tuner's unit of work)
        self.callbacks: list[Callback] = [*self.default_callbacks(), *callbacks]
        self.logger: RunLogger | None = None  # while train() runs
        self._lock = FolderLock(self.run_dir, what="training", noun="run folder")
        self._claim_run_dir(resume, overwrite)
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def default_callbacks(self) -> list[Callback]:
        """The run log, ``best.pth`` and the ``train.snapshot_every`` snapshots."""
        return [RunLog(int(self.opts.log_every)), BestCheckpoint(), Snapshots(int(self.opts.snapshot_every))]

    def _claim_run_dir(self, resume: bool, overwrite: bool) -> None:
        """Lock the run folder (main process), delete the temporaries of a killed save, then refuse
        to start afresh over its checkpoints, or clear them (``overwrite``). Every process raises
        the main process's error, if any."""
        error: BaseException | None = None
        if self.is_main:
            try:
                self._lock.acquire()
                removed = remove_temporaries(self.run_dir, ATOMIC_OUTPUTS)
                if self.ckpt_dir.is_dir():
                    removed += remove_temporaries(self.ckpt_dir)
                if removed:
                    log.info("%s: removed %d temporary file(s) an interrupted save left", self.run_dir, len(removed))
                existing = sorted(p.name for p in self.ckpt_dir.glob("*.pth"))
                if existing and not resume and not overwrite:
                    raise FileExistsError(
                        f"{self.ckpt_dir}: the run folder already holds checkpoints ({', '.join(existing)}); "
                        "pass --resume to continue it, --overwrite to start again, or choose another --out"
                    )
                if overwrite:
                    clear_run_outputs(self.run_dir)
            except OSError as e:
                self._lock.release()
                error = e
        # Only the main process claims the folder; the others would wait for it forever.
        main_error = error_elsewhere(None if error is None else one_line(error))
        if main_error is not None:
            raise OSError(main_error)  # the main process's error is an OSError; its message is the same
        if error is not None:
            raise error

    def _build(self, resume: bool) -> None:
        from pointseg.data import build_dataset
        from pointseg.datasets import spec_of
        from pointseg.models.segmentor import build_context, build_segmentor

        cfg = self.cfg
        last = self.ckpt_dir / LAST
        # Same seed on every process: identical initial weights (DDP also broadcasts them).
        seed_everything(self.seed)
        self.context = build_context(cfg)
        self.num_classes = self.context.num_classes
        model = build_segmentor(cfg, train=True, ctx=self.context)
        sync_bn = self.opts.sync_bn
        if sync_bn and self.dist.world_size > 1:
            if self.device.type == "cuda":
                # The backbone only: the center branch's BatchNorm normalizes each process's own
                # batch, as the released head's plain BatchNorm2d does on each GPU.
                model.backbone = convert_sync_batchnorm(model.backbone)
            elif sync_bn is True and self.is_main:
                log.warning("train.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU")
        self.model = model.to(self.device)
        self.net: nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.opts.find_unused_parameters),
            )
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, self.total)
        # Mixed precision on either device (one code path): float16 on CUDA, bfloat16 on CPU (the
        # type CPU autocast computes in); the scaler skips any step whose gradients overflowed.
        self.amp = bool(self.opts.amp)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

        self.batch_size = int(cfg.data.batch_size)
        # Augmentations follow the run's seed unless the config sets data.seed itself.
        data_cfg = cfg.data if cfg.data.seed is not None else replace_checked(cfg.data, "data", seed=self.seed)
        spec = spec_of(data_cfg)  # the dataset's split folders and label space
        self.train_set = build_dataset(data_cfg, spec.train_split, "train", num_classes=self.num_classes)
        self._repeat_factors = None
        if cfg.data.sampler == "repeat_factor":
            from pointseg.data.sampler import repeat_factors, scene_classes

            if int(cfg.data.loop) != 1:
                raise ValueError("data.sampler repeat_factor sets how often each scene is visited; use it with data.loop 1")
            present = scene_classes(self.train_set.scenes, self.num_classes, self.train_set.spec)
            self._repeat_factors = repeat_factors(present, float(cfg.data.repeat_threshold))
        self.val_set = None
        if self.opts.validate and self._has_split(spec.val_split):
            self.val_set = build_dataset(data_cfg, spec.val_split, "val")

        self.iteration = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_miou = float("-inf")
        # True while the current iteration's validation is due but not done: saved in last.pth,
        # so that a run stopped or killed before validating validates first when resumed.
        self._val_pending = False
        self._batches: Iterator[dict[str, Any]] | None = None
        self._stop_requested = False
        self.stop_reason: str | None = None
        # Runtime randomness (if any) differs per process; a resume restores it instead.
        seed_everything(_seed_for(self.seed, self.dist.rank, 1))
        if resume and last.exists():
            self._load(last)
        elif resume and self.is_main:
            log.info("--resume: no checkpoint in %s, starting from scratch", self.ckpt_dir)

    # ------------------------------------------------------------------ data
    def _has_split(self, split: str) -> bool:
        return (Path(self.cfg.data.root) / split).is_dir()

    def _epoch_loader(self, epoch: int, start_batch: int) -> DataLoader:
        from pointseg.data.collate import collate

        self.train_set.set_epoch(epoch)
        if self._repeat_factors is not None:
            from pointseg.data.sampler import repeat_factor_items, shard

            items = repeat_factor_items(self._repeat_factors, self.seed, epoch)
            indices = shard(items, self.dist.rank, self.dist.world_size)
        else:
            sampler = DistributedSampler(
                self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(epoch)
            indices = list(sampler)
        drop_last = self.cfg.data.drop_last and len(indices) >= self.batch_size
        indices = indices[start_batch * self.batch_size :]
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=indices,
            collate_fn=functools.partial(collate, max_points=self.cfg.data.max_points),
            num_workers=self.num_workers,
            worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(_seed_for(self.seed, epoch, self.dist.rank)),
            drop_last=drop_last,
            pin_memory=self.device.type == "cuda",
        )

    def batches_per_epoch(self) -> int:
        # Repeat-factor sampling visits every scene at least once, so this bounds its epochs from below.
        per_rank = math.ceil(len(self.train_set) / self.dist.world_size)
        if self.cfg.data.drop_last and per_rank >= self.batch_size:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def _next_batch(self) -> dict[str, Any]:
        if self.batches_per_epoch() == 0:
            raise ValueError(f"{self.cfg.data.root}: the train split has no scenes")
        while True:
            if self._batches is None:
                with stop_signals_deferred():  # until the workers ignore them
                    self._batches = iter(self._epoch_loader(self.epoch, self.batch_in_epoch))
            try:
                batch = next(self._batches)
            except StopIteration:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._batches = None
                continue
            self.batch_in_epoch += 1
            return self._to_device(batch)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        rng = capture_rng_state()
        rng["data"] = {"seed": self.seed, "epoch": self.epoch, "batch": self.batch_in_epoch}
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "iteration": self.iteration,
            "config": to_plain_dict(self.cfg),
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "val_pending": self._val_pending,
        }

    def save(self, *names: str) -> None:
        """Write the checkpoint under each name (main process only), atomically."""
        if not self.is_main:
            return
        state = self.checkpoint_state()
        for name in names:
            save_checkpoint(state, self.ckpt_dir / name)

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        try:
            self._restore(ckpt, path)
        except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as e:
            text = one_line(e)
            if text.startswith(str(path)):
                raise
            raise ValueError(f"{path}: cannot resume from this checkpoint ({type(e).__name__}: {text})") from e

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        fixed = fixed_tensors(self.model)
        # Whether the tensors fit first: another model's ETF differs too, for a reason that says less.
        load_model_weights(self.model, ckpt["model"], path, ckpt.get("config"), to_plain_dict(self.cfg))
        for key, value in fixed.items():
            if not torch.equal(value, self.model.state_dict()[key].cpu()):
                raise ValueError(f"{path}: the stored ETF {key} differs from the one this config builds (ceco.etf_seed?)")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best_miou = float("-inf") if ckpt.get("best_miou") is None else float(ckpt["best_miou"])
        self._val_pending = bool(ckpt.get("val_pending", False))
        data = ckpt["rng"]["data"]
        if int(data["seed"]) != self.seed:
            raise ValueError(f"{path}: checkpoint was trained with seed {data['seed']}, config says {self.seed}")
        self.epoch, self.batch_in_epoch = int(data["epoch"]), int(data["batch"])
        self._batches = None
        if self.dist.rank == 0:
            restore_rng_state(ckpt["rng"])
        else:  # only the main process's RNG is saved; others reseed deterministically
            seed_everything(_seed_for(self.seed, self.dist.rank, self.iteration))

    def run_facts(self) -> list[str]:
        """What the settings left to this machine became: the backend ``model.backend: auto`` runs
        on this device and the threads (config.yaml's header, the console)."""
        from pointseg.sparse import resolve_backend_name

        backend = self.cfg.model.backend
        ran = resolve_backend_name(backend, self.device.type)
        threads = (f"chosen online among {self.thread_tuner.candidates}" if self.thread_tuner
                   else str(torch.get_num_threads()))
        return [f"model.backend: {backend} -> {ran} on {self.device.type}" if backend == "auto"
                else f"model.backend: {ran} on {self.device.type}",
                f"train.threads: {self.opts.threads} -> {threads}"]

    # ------------------------------------------------------------------ loop
    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop after the current iteration and save ``last.pth`` (on SIGINT, SIGTERM or SIGUSR1).

        Only sets a flag, so it is safe to call from a signal handler.
        """
        self._stop_requested = True
        self.stop_reason = reason

    def close(self) -> None:
        """Release the run folder (after stopping the data-loading processes, which share the
        lock's open file); :meth:`train` does this when it ends."""
        batches, self._batches = getattr(self, "_batches", None), None  # None: the build failed first
        shutdown_workers(batches)
        self._lock.release()

    def _check_finite(self, losses: dict[str, torch.Tensor], iteration: int) -> None:
        bad = first_non_finite(losses)
        if self.dist.world_size > 1:  # every process must stop together
            flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            all_reduce_(flag, "max")
            if bad is None and flag.item() > 0:
                raise NonFiniteLossError(f"iteration {iteration}: non-finite loss on another process; stopping")
        if bad is not None:
            name, value = bad
            last = self.ckpt_dir / LAST
            kept = f"last good checkpoint kept: {last}" if last.exists() else "no checkpoint was written yet"
            raise NonFiniteLossError(f"iteration {iteration}: loss term {name!r} is {value}; stopping ({kept})")

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step over ``accumulate`` micro-batches; returns the mean loss terms
        (detached scalars on the device: reading them would wait for the step to finish)."""
        self.net.train()
        iteration = self.iteration + 1
        sums: dict[str, torch.Tensor] = {}
        self._step_points = 0
        for micro in range(self.accumulate):
            batch = self._next_batch()
            self._step_points += int(batch["segment"].shape[0])
            last_micro = micro == self.accumulate - 1
            sync = contextlib.nullcontext() if last_micro or self.dist.world_size == 1 else self.net.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    losses = self.net(batch)
                self._check_finite(losses, iteration)
                loss = losses["loss"] / self.accumulate if self.accumulate > 1 else losses["loss"]
                self.scaler.scale(loss).backward()
            for k, v in losses.items():
                v = v.detach().float()
                sums[k] = sums[k] + v if k in sums else v
        if self.opts.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.opts.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration = iteration
        return {k: v / self.accumulate if self.accumulate > 1 else v for k, v in sums.items()}

    def timed_step(self) -> tuple[dict[str, torch.Tensor], float, int]:
        """:meth:`train_step` with the thread tuner around it: (losses, wall seconds, threads)."""
        threads = self.thread_tuner.before_step() if self.thread_tuner else torch.get_num_threads()
        start = time.perf_counter()
        losses = self.train_step()
        seconds = time.perf_counter() - start
        if self.thread_tuner:
            self.thread_tuner.after_step(seconds, self._step_points)
        return losses, seconds, threads

    def reduce_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss terms averaged over the processes (a collective: every process calls it)."""
        keys = sorted(losses)
        values = torch.stack([losses[k].reshape(()) for k in keys]).to(self.device)
        all_reduce_(values, "mean")
        reduced = dict(zip(keys, values.cpu().tolist()))
        return {k: reduced[k] for k in losses}  # the model's order

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Voxel-level mIoU on the val split (scenes sharded over processes, confusion summed).

        Raises :class:`ValidationFailed` (naming the scene, or the file that could not be read)
        on every process when any process fails, so none waits for the others forever.
        """
        from pointseg.data.collate import collate
        from pointseg.evaluation.metrics import SemSegMetric

        if self.val_set is None:
            return {}
        self.model.eval()
        metric = SemSegMetric(self.num_classes)
        indices = list(range(self.dist.rank, len(self.val_set), self.dist.world_size))
        loader = DataLoader(
            self.val_set,
            batch_size=int(self.cfg.data.val_batch_size),
            sampler=indices,
            collate_fn=collate,
            num_workers=self.num_workers,
            worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(_seed_for(self.seed, 2**31 - 1, self.dist.rank)),
        )
        error: Exception | None = None
        scenes: list[str] | None = None  # the batch being predicted (a loading error names its file)
        try:
            with stop_signals_deferred():
                batches = iter(loader)
            for batch in batches:
                scenes = list(batch["name"])
                batch = self._to_device(batch)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    logits = self.model(batch)["logits"]
                metric.process(logits.argmax(dim=1), batch["segment"])
                scenes = None
        except Exception as e:  # out of memory, a broken scene: reported by the caller
            error = ValidationFailed(f"scene {', '.join(scenes)}: {one_line(e)}" if scenes else one_line(e))
            error.__cause__ = e
        finally:
            self.model.train()
        other = error_elsewhere(None if error is None else str(error))
        if other is not None:
            raise ValidationFailed(f"on another process: {other}")
        if error is not None:
            raise error
        metric.all_reduce()
        return metric.evaluate()

    def _validate_and_save(self, iteration: int, logger: RunLogger, last_saved: bool) -> None:
        """Validate ``iteration``, then the callbacks (``best.pth``); rewrite ``last.pth`` if it was
        written at this iteration (its validation is no longer pending), and what they add.

        A failed validation is one console line and a ``val.jsonl`` record (traceback in
        ``errors.log``); the run goes on unless ``train.stop_on_val_error``.
        """
        try:
            metrics = self.validate()
        except Exception as e:
            message = f"iteration {iteration}: validation failed: {one_line(e)}"
            logger.log_val_error(iteration, message, "".join(traceback.format_exception(e)))
            if self.opts.stop_on_val_error:
                self.save(LAST)  # still pending: --resume validates this iteration first
                barrier()
                raise ValidationFailed(
                    f"{message} (train.stop_on_val_error: stopped with {self.ckpt_dir / LAST} saved; "
                    "--resume validates this iteration again)"
                ) from e
            logger.console(f"warning: {message}; training goes on (traceback in {self.run_dir / ERRORS_LOG})")
            self._val_pending = False
            names = [LAST] if last_saved else []
        else:
            self._val_pending = False
            for callback in self.callbacks:
                callback.after_validation(self, iteration, metrics)
            names = [LAST] if last_saved else []
            for callback in self.callbacks:
                callback.before_save(self, iteration, names, "validation")
        if names:
            self.save(*names)
            barrier()

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run to ``train.iterations`` (or stop early after ``stop_at`` or a :meth:`request_stop`,
        saving ``last.pth``). Releases the run folder when it returns or raises."""
        try:
            if self.is_main:
                self._lock.acquire()  # held since construction unless close() was called
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.run_dir / CONFIG_FILE, self.run_facts())
            logger = self.logger = RunLogger(
                self.run_dir,
                self.total,
                self.iteration,
                enabled=self.is_main,
                console_every=int(self.opts.console_every),
                progress_bar=bool(self.opts.progress_bar),
                revalidate=self._val_pending,
            )
            logger.console("; ".join(self.run_facts()))
            try:
                summary = self._loop(logger, stop_at)
            except BaseException:
                with contextlib.suppress(OSError):  # a full disk: the loop's error says it first
                    logger.close()
                raise
            logger.close()
            return summary
        finally:
            self.close()

    def _loop(self, logger: RunLogger, stop_at: int | None) -> dict[str, Any]:
        save_every, val_every = int(self.opts.save_every), int(self.opts.val_every)
        stopped = False
        if self._val_pending:  # the checkpoint's iteration was saved but not validated
            if self.val_set is not None:
                self._validate_and_save(self.iteration, logger, last_saved=True)
            self._val_pending = False
        while self.iteration < self.total:
            lr = current_lr(self.optimizer)
            losses, seconds, threads = self.timed_step()
            it = self.iteration
            step = Step(it, lr, losses, seconds, threads)
            for callback in self.callbacks:
                callback.after_step(self, step)
            done = it == self.total
            stop = self._stop_requested or (stop_at is not None and it >= stop_at)
            if self.dist.world_size > 1:  # a signal may reach the processes at different times
                flag = torch.tensor([float(stop)], device=self.device)
                stop = bool(all_reduce_(flag, "max").item())
            stopped = stop and not done
            validate = self.val_set is not None and ((val_every > 0 and it % val_every == 0) or done)
            # Save first: a validation that fails or is killed must not cost the iterations.
            names = [LAST] if done or stop or (save_every > 0 and it % save_every == 0) else []
            for callback in self.callbacks:
                callback.before_save(self, it, names, "step")
            self._val_pending = validate
            if names:
                self.save(*names)
                barrier()
            if validate and not stopped:  # a stop skips it; the resumed run validates first
                self._validate_and_save(it, logger, last_saved=LAST in names)
            if stopped:
                break
        return {
            "iteration": self.iteration,
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "losses": next((c.last_losses for c in self.callbacks if isinstance(c, RunLog)), {}),
            "run_dir": str(self.run_dir),
            "stopped": stopped,
        }
