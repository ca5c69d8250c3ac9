"""The training loop: :func:`fit` trains a model for the epochs of a config (one epoch
and one evaluation at a time, in :class:`_Loop`), with the objective, the method's hooks,
the settler and the hand-over to the extracted network."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..costs import COSTS, CostModel
from ..consensus import DisagreementCounter, consensus_masks, frozen_masks, gate_modules
from ..flops import predicted_flops
from ..data import BatchLoader
from ..gates import GateRecord
from ..models import ResNet
from ..objective import Objective
from ..settle import Settler, is_live
from . import distributed
from .checkpoint import FitState, _load_checkpoint, _save_checkpoint
from .config import TrainConfig
from .optim import make_optimizers, make_weight_optimizer


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, masks: dict | None = None, progress: bool = False, amp: bool = True
) -> dict[str, float]:
    """Top-1 (percent) of ``model`` over ``loader`` in eval mode; with ``masks`` and live
    gates, also the consensus disagreement rate of the same pass. ``amp``: bfloat16
    autocast on CUDA."""
    was_training = model.training
    model.eval()
    correct = total = 0
    counter = DisagreementCounter(model, masks) if masks is not None else None
    try:
        with counter or contextlib.nullcontext():
            for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
                with _autocast(x.device, amp):
                    logits = model(x)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
    finally:
        model.train(was_training)
    result = {"top1": 100.0 * correct / max(total, 1)}
    if counter:
        result["disagreement"] = counter.rate
    return result


def _autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


# ----------------------------------------------------------------------------- loop


@dataclass
class Trainee:
    """The network being trained and its optimizers: the gated model, or, after a hand-over
    (``train_extracted``), its extracted network with the weights' SGD alone."""

    net: nn.Module
    optimizers: list
    scheduler: Any
    handed_over: bool = False


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch ``history`` and the trained ``network``
    (the gated model itself, or the extracted network it handed over to)."""

    history: list[dict]
    network: nn.Module
    wall_before: float = 0.0


def fit(
    model: ResNet,
    train_loader: BatchLoader,
    test_loader: BatchLoader,
    config: TrainConfig,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    method_hooks: Any = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` in one pass for ``config.epochs`` epochs.

    Each history entry (one per epoch): epoch, lr, train_loss, ce, sparsity,
    polarization, lambda_pol, top1_gated (test set, the network as it is at the epoch's
    end), disagreement (live test decisions vs the current consensus masks; 0 once the
    gates are frozen), mean_firing_rate {gate: mean r}, firing_rates {gate: [r_j]},
    kept_units, flops_masked (the FLOPs the current masks would give the extracted
    network), seconds (wall clock), cpu_seconds (CPU time of this process, all threads);
    in the epoch in which the gates froze (``settle="freeze"``),
    ``settle``: {step, epoch, reason, removed, top1_live, top1_frozen, disagreement}; in
    the epoch of the hand-over to the extracted network, ``handover_step``.

    With ``checkpoint``, a checkpoint is written atomically after every epoch (before
    ``on_epoch_end`` is called); with ``resume`` and an existing checkpoint, training
    continues from it and ends exactly as an unbroken run would (CPU, same seed).
    """
    from ..baselines import method_hooks as default_hooks

    hooks = method_hooks or default_hooks(config)
    optimizers, scheduler = make_optimizers(model, config, len(train_loader))
    trainee = Trainee(model, optimizers, scheduler)
    total_steps = config.epochs * len(train_loader)
    objective = make_objective(config, total_steps)
    settler = make_settler(config, total_steps)
    ckpt_path = Path(checkpoint) if checkpoint else None
    state = FitState()
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, model, trainee, train_loader, config, hooks, settler)
    else:
        hooks.on_start(model)
    hooks.setup(model)
    if hooks.gated(model):
        objective.attach(model)
    loop = _Loop(model, trainee, train_loader, test_loader, config, objective, hooks, settler)
    progress = progress and loop.main
    epochs = tqdm(range(state.epoch, config.epochs), desc="epochs", initial=state.epoch,
                  total=config.epochs, disable=not progress)
    for epoch in epochs:
        record = loop.epoch(state, epoch, progress)
        if loop.main:
            epochs.set_postfix(top1=f"{record['top1_gated']:.2f}")
        if ckpt_path is not None:  # every process takes part (its random state), rank 0 writes
            _save_checkpoint(ckpt_path, state, model, trainee, train_loader, config, hooks, settler)
        if on_epoch_end is not None and loop.main:
            on_epoch_end(epoch + 1, record)
    return FitResult(state.history, trainee.net, state.wall_before)


def make_objective(config: TrainConfig, total_steps: int) -> Objective:
    """The training objective of ``config`` for a run of ``total_steps`` steps."""
    same = {f.name: getattr(config, f.name) for f in dataclasses.fields(Objective) if hasattr(config, f.name)}
    return Objective(
        **same | {"allocation": config.budget_allocation},  # "auto" resolved for the gating
        pol_warmup_steps=int(config.pol_warmup * total_steps),
        sparsity_start_steps=int(config.sparsity_start * total_steps),
        reduce_mean=distributed.mean_across_ranks if distributed.world() > 1 else None,
    )


def make_settler(config: TrainConfig, total_steps: int) -> Settler | None:
    """The :class:`~consensus_tutorial.settle.Settler` of ``config`` (None with ``settle="live"``)."""
    if config.settle == "live":
        return None
    from ..baselines import masks_for_flops

    def cost_of(model: ResNet) -> CostModel:
        return COSTS[config.cost](model, config.latency_table)

    def budget_masks(model: ResNet) -> dict:
        gates = gate_modules(model)
        rates = {n: g.firing_rate.detach().float().cpu() for n, g in gates.items()}
        floors = {n: 0 if config.gating == "layer" else max(1, config.min_channels, math.ceil(config.min_keep * g.units - 1e-9))
                  for n, g in gates.items()}  # a layer gate may close its block; a channel layer keeps one channel
        return masks_for_flops(model, rates, config.target_rate, uniform=config.budget_allocation == "uniform",
                               min_channels=floors, cost=cost_of(model), round_to=config.round_to)

    unrounded = dataclasses.replace(config, round_to=None)  # the gates' own decisions; the cut rounds
    return Settler(
        masks_of=lambda model: _masks(model, unrounded), budget_masks=budget_masks, target_rate=config.target_rate,
        flops_aware=config.flops_aware, window=int(config.settle_window), tolerance=config.settle_tolerance,
        deadline_step=max(1, round(config.settle_deadline * total_steps)), max_flips=config.settle_flips,
        cost_of=cost_of,
    )


def _hand_over(model: ResNet, trainee: Trainee, config: TrainConfig, total_steps: int) -> None:
    """Switch ``trainee`` to the extracted network of ``model`` (gates all frozen)."""
    from ..handover import hand_over

    net, sgd, scheduler = hand_over(
        model, frozen_masks(model), trainee.optimizers[0], trainee.scheduler,
        lambda params: make_weight_optimizer(params, config, total_steps))
    if next(model.parameters()).is_contiguous(memory_format=torch.channels_last):
        net = net.to(memory_format=torch.channels_last)
    trainee.net, trainee.optimizers, trainee.scheduler, trainee.handed_over = net, [sgd], scheduler, True


class _Loop:
    """One training epoch and its evaluation, with what :func:`fit` set up."""

    def __init__(self, model, trainee, train_loader, test_loader, config, objective, hooks, settler):
        self.model, self.trainee, self.config = model, trainee, config
        self.train_loader, self.test_loader = train_loader, test_loader
        self.objective, self.hooks, self.settler = objective, hooks, settler
        self.device = next(model.parameters()).device
        self.total_steps = config.epochs * len(train_loader)
        self.main = distributed.rank() == 0  # evaluates; the others only train
        self._wrapped: tuple[tuple, nn.Module] | None = None

    def _forward_net(self) -> nn.Module:
        """The trained network, in DistributedDataParallel under several processes (wrapped
        again after a hand-over, which trains another network)."""
        if not distributed.active():
            return self.trainee.net
        frozen = tuple(g.is_frozen for g in gate_modules(self.trainee.net).values())
        key = (self.trainee.net, frozen)
        if self._wrapped is None or self._wrapped[0] != key:
            wrapped = distributed.wrap(self.trainee.net, self.device, unused_parameters=any(frozen))
            self._wrapped = (key, wrapped)
        return self._wrapped[1]

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step; returns the loss terms as detached tensors (read on the host
        once per logging interval, not here: on a GPU every read waits for the device)."""
        optimizers = self.trainee.optimizers
        record = None if self.trainee.handed_over else GateRecord()
        with _autocast(self.device, self.config.amp):
            net = self._forward_net()
            logits = net(x) if record is None else net(x, record=record)
        loss, terms = self.objective(self.trainee.net, logits, y, step, record)
        loss = loss + self.hooks.extra_loss(self.model)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        self.trainee.scheduler.step()
        self.hooks.after_step(self.model)
        if record is not None and len(record):  # one consensus: the firing rates of all processes
            distributed.average_buffers([g.firing_rate for g in record.gates])
        return {"loss": loss.detach(), **terms}

    def _maybe_hand_over(self, step: int) -> int | None:
        """Hand over to the extracted network once the gates are frozen to a mask that
        closes something (an all-open freeze, as the L1 baseline's dense phase, waits)."""
        if not self.config.train_extracted or self.trainee.handed_over:
            return None
        masks = frozen_masks(self.model)
        if masks is None or all(bool(m.all()) for m in masks.values()):
            return None
        _hand_over(self.model, self.trainee, self.config, self.total_steps)
        return step

    def epoch(self, state: FitState, epoch: int, progress: bool) -> dict:
        """Train epoch ``epoch`` (0-based), evaluate, append the record to the history."""
        started, cpu_started = time.perf_counter(), time.process_time()
        self.hooks.on_epoch_start(self.model, epoch)
        handover = self._maybe_hand_over(state.step)
        self.trainee.net.train()
        sums: dict[str, Any] = {"loss": 0.0, "ce": 0.0, "sparsity": 0.0, "polarization": 0.0, "lambda_pol": 0.0}
        batches, settled = 0, None
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
        for x, y in bar:
            for k, v in self.step(x, y, state.step).items():
                sums[k] += v
            state.step += 1
            batches += 1
            if self.settler is not None and is_live(self.model):
                masks = self.settler.check(self.model, state.step)
                if masks is not None:
                    settled = self._settle(masks, epoch)
                    handover = self._maybe_hand_over(state.step)
            if progress and batches % 10 == 0:
                bar.set_postfix(loss=f"{float(sums['loss']) / batches:.3f}")
        record = {"epoch": epoch + 1, "lr": self.trainee.scheduler.get_last_lr()[0]}
        record |= self._mean_terms(sums, batches)
        if distributed.active():
            record["mask_agreement"] = _mask_agreement(self.model, self.config)
        if self.main:
            record |= _gate_report(self.model, self.trainee.net, self.test_loader, self.config)
        if settled is not None:
            record["settle"] = settled
        if handover is not None:
            record["handover_step"] = handover
        record["seconds"] = time.perf_counter() - started
        record["cpu_seconds"] = time.process_time() - cpu_started  # all threads of this process
        state.elapsed += record["seconds"]
        state.history.append(record)
        state.epoch = epoch + 1
        return record

    def _mean_terms(self, sums: dict, batches: int) -> dict[str, float]:
        """The epoch's mean loss terms over all steps of all processes (one reduction)."""
        totals = distributed.sum_across_ranks(
            {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in sums.items()})
        count = max(batches, 1) * distributed.world()
        return {("train_loss" if k == "loss" else k): float(v) / count for k, v in totals.items()}

    def _settle(self, masks: dict, epoch: int) -> dict:
        """Freeze the gates to ``masks``; measure the test set just before and after (rank 0)."""
        if not self.main:
            self.settler.freeze(self.model, masks)
            return dict(self.settler.record, epoch=epoch + 1)
        live = evaluate(self.model, self.test_loader, masks, amp=self.config.amp)
        self.settler.freeze(self.model, masks)
        frozen = evaluate(self.model, self.test_loader, amp=self.config.amp)
        self.model.train()
        return self.settler.record | {
            "epoch": epoch + 1, "removed": round(self.settler.record["removed"], 4),
            "top1_live": live["top1"], "top1_frozen": frozen["top1"], "disagreement": live["disagreement"],
        }


def _gate_report(model: ResNet, net: nn.Module, test_loader, config: TrainConfig) -> dict:
    """Test top-1 of ``net`` (the gated model, or the network it handed over to) and the
    gate statistics of ``model``."""
    gates = gate_modules(model)
    live = is_live(model)
    masks = _masks(model, config) if gates else None
    result = evaluate(net, test_loader, masks if live else None, amp=config.amp)
    report = {"top1_gated": result["top1"]}
    if gates:
        report["disagreement"] = result.get("disagreement", 0.0)
        report["mean_firing_rate"] = {n: float(g.firing_rate.mean()) for n, g in gates.items()}
        report["firing_rates"] = {n: [round(float(r), 4) for r in g.firing_rate] for n, g in gates.items()}
        report["kept_units"] = {n: int(m.sum()) for n, m in masks.items()}
        report["flops_masked"] = predicted_flops(model, masks)
    return report


def _mask_agreement(model: ResNet, config: TrainConfig) -> float:
    """Share of gated units on whose consensus decision every process agrees (1.0: one
    mask); a collective call, made by every process."""
    masks = _masks(model, config) if gate_modules(model) else {}
    flat = torch.cat([m.reshape(-1).bool() for m in masks.values()]) if masks else torch.ones(0, dtype=torch.bool)
    everyone = torch.stack([torch.as_tensor(m) for m in distributed.gather_objects(flat)])
    if everyone.shape[1] == 0:
        return 1.0
    return float((everyone == everyone[0]).all(0).float().mean())


def _masks(model: ResNet, config: TrainConfig) -> dict:
    gates = gate_modules(model)
    if all(g.is_frozen for g in gates.values()):
        return {n: g.mask.bool().cpu() for n, g in gates.items()}
    return consensus_masks(model, config.threshold, min_channels=config.min_channels, round_to=config.round_to,
                           min_share=config.min_keep)


# ----------------------------------------------------------------------------- a whole run
