"""One-pass training: gated (or plain) model in, history, masks and a sub-network out.

:func:`run` is the whole experiment (the command line calls it): data, model, the
training loop of :func:`fit`, consensus masks, extraction, evaluation and the files of
a run folder. :func:`fit` is the loop alone, for notebooks that bring their own model
and data.

Everything that changes a result is a field of :class:`TrainConfig`; a run folder keeps
it in ``metrics.json`` and in ``checkpoint.pt``, which is written atomically after every
epoch, so a killed run resumes (``resume=True``) and ends as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ._version import __version__
from ._checks import check_choice, check_rate
from .consensus import DisagreementCounter, consensus_masks, freeze_gates, frozen_masks, gate_modules
from .data import DATA_ENV, BatchLoader, DATASETS, ImageSet, dataset_info, load_dataset
from .data import data_root as data_root_of
from .extraction import PrunedResNet, extract_subnetwork, save_subnetwork
from .gates import GateRecord
from .io import atomic_json, atomic_torch_save, load_torch_file, machine_info, remove_stale_temporaries
from .flops import count_flops, count_params, predicted_flops, unit_flops
from .models import ARCHS, ResNet, build_model
from .objective import ALLOCATIONS, Objective
from .positions import channel_positions
from .regularizers import POLARIZERS
from .settle import Settler, is_live

SETTLE_CHOICES = ("freeze", "live")
GATE_LR_SCALES = ("none", "cost")

#: the gate parameters' own optimizer: name -> (param groups, config) -> optimizer.
#: Adam moves every parameter by about its learning rate whatever its gradient; SGD (with
#: the weights' momentum, a constant ``gate_lr``) moves it in proportion to its gradient,
#: so that the FLOPs weights of the sparsity term act.
GATE_OPTIMIZERS: dict[str, Callable[[list, Any], torch.optim.Optimizer]] = {
    "adam": lambda groups, config: torch.optim.Adam(groups, lr=config.gate_lr),
    "sgd": lambda groups, config: torch.optim.SGD(groups, lr=config.gate_lr, momentum=config.momentum),
}


@dataclass
class TrainConfig:
    """Every setting of a run; the book's method chapter explains each default."""

    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    arch: str = "resnet20"
    method: str = "consensus"
    gating: str | None = "channel"
    position: str = "b"
    gate: str = "dynamic"
    gate_depth: int = 1
    target_rate: float = 0.5
    flops_aware: bool = True
    sparsity_on: str = "hard"
    allocation: str = "auto"
    min_keep: float = 0.0
    settle: str = "freeze"
    settle_window: int = 20
    settle_tolerance: float = 0.03
    settle_flips: float = 0.03
    settle_deadline: float = 0.3
    sparsity_start: float = 0.1
    train_extracted: bool = True
    polarizer: str = "bimodal"
    zhuang_t: float | None = None
    lambda_sp: float = 5.0
    lambda_pol: float = 1.0
    pol_warmup: float = 0.3
    init_prob: float = 0.9
    gate_momentum: float = 0.9
    threshold: float = 0.5
    min_channels: int = 1
    round_to: int | None = None
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    gate_optimizer: str = "adam"
    gate_lr: float = 1e-2
    gate_lr_scale: str = "none"
    gate_input_lr_scale: float = 1.0
    limit_train: int | None = None
    limit_test: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int | None = None
    verify_checksums: bool = True
    # used by some baselines (see consensus_tutorial.baselines)
    prune_at: float = 0.5
    bn_lambda: float = 1e-4
    widths_from: str | None = None

    def validate(self) -> "TrainConfig":
        """The checked config: raise ValueError, naming the allowed values, for any setting
        out of range; else return a copy with the method's model settings applied (the
        pruned baselines' frozen gates at position b, no gates for ``dense``). ``self`` is
        not changed."""
        from .baselines import METHODS, method_model_settings

        check_choice("dataset", self.dataset, DATASETS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("method", self.method, tuple(METHODS))
        check_choice("gating", self.gating, (None, "layer", "channel"))
        check_choice("position", self.position, channel_positions())
        check_choice("gate", self.gate, ("dynamic", "static"))
        check_choice("gate_depth", self.gate_depth, (1, 2))
        check_choice("sparsity_on", self.sparsity_on, ("hard", "soft"))
        check_choice("polarizer", self.polarizer, tuple(POLARIZERS))
        check_choice("schedule", self.schedule, tuple(SCHEDULES_BY_NAME))
        check_choice("gate_optimizer", self.gate_optimizer, tuple(GATE_OPTIMIZERS))
        check_choice("gate_lr_scale", self.gate_lr_scale, GATE_LR_SCALES)
        check_choice("settle", self.settle, SETTLE_CHOICES)
        check_choice("allocation", self.allocation, ("auto", *ALLOCATIONS))
        check_rate("target_rate", self.target_rate)
        self._validate_settle()
        self._validate_numbers()
        if POLARIZERS[self.polarizer].takes_t and self.zhuang_t is None:
            raise ValueError(f"polarizer={self.polarizer!r} needs zhuang_t, its t "
                             "(e.g. 0.0 keeps about half of the units).")
        if (self.arch == "resnet18") != (self.dataset == "tiny-imagenet"):
            raise ValueError(
                f"arch {self.arch!r} does not fit dataset {self.dataset!r}: use resnet18 for tiny-imagenet "
                "and resnet20 ... resnet110 for cifar10/cifar100."
            )
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}.")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
        if self.lr <= 0 or self.gate_lr <= 0:
            raise ValueError(f"lr and gate_lr must be positive; got {self.lr!r}, {self.gate_lr!r}.")
        if not 0.0 <= self.pol_warmup <= 1.0 or not 0.0 < self.prune_at < 1.0:
            raise ValueError("pol_warmup must lie in [0, 1] and prune_at in (0, 1).")
        if self.epochs < METHODS[self.method].min_epochs:
            raise ValueError(
                f"method {self.method!r} needs epochs >= {METHODS[self.method].min_epochs} (it prunes after a "
                f"share, prune_at={self.prune_at}, of the epochs and fine-tunes for the rest)."
            )
        return dataclasses.replace(self, **method_model_settings(self.method))

    def _validate_numbers(self) -> None:
        """Ranges of the numeric settings, each error naming its setting."""
        ranges = {  # name: (low, high, inclusive low, inclusive high, meaning)
            "threshold": (0.0, 1.0, True, True, "a firing-rate threshold"),
            "gate_momentum": (0.0, 1.0, True, False, "the firing-rate EMA momentum"),
            "init_prob": (0.0, 1.0, False, False, "the gates' initial probability"),
            "momentum": (0.0, 1.0, True, False, "SGD momentum"),
        }
        for name, (low, high, low_in, high_in, meaning) in ranges.items():
            value = getattr(self, name)
            above = value >= low if low_in else value > low
            below = value <= high if high_in else value < high
            if not (above and below):
                interval = f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
                raise ValueError(f"{name} ({meaning}) must lie in {interval}; got {value!r}.")
        for name, least in (("seed", 0), ("min_channels", 0), ("threads", 1), ("round_to", 1)):
            value = getattr(self, name)
            if value is not None and int(value) < least:
                raise ValueError(f"{name} must be an integer >= {least}{' or None' if name in ('threads', 'round_to') else ''}; "
                                 f"got {value!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")
        if self.limit_train is not None and int(self.limit_train) < int(self.batch_size):
            raise ValueError(
                f"limit_train ({self.limit_train}) is smaller than batch_size ({self.batch_size}): an epoch "
                "would have no full batch and nothing would train. Raise limit_train or lower batch_size.")
        device = str(self.device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU that torch can use; pass "
                             "--device cpu (or auto, which picks a GPU when there is one).")

    def _validate_settle(self) -> None:
        if not 0.0 <= self.min_keep < 1.0:
            raise ValueError(f"min_keep (the per-layer floor) must lie in [0, 1); got {self.min_keep!r}.")
        if self.allocation == "uniform" and self.gating == "layer":
            raise ValueError("allocation='uniform' holds every layer's channels to one share: use it with "
                             "gating='channel' (layer gating has one unit per block).")
        if int(self.settle_window) < 1 or not 0.0 < self.settle_deadline <= 1.0:
            raise ValueError("settle_window must be a positive number of steps and settle_deadline a share "
                             f"of the steps in (0, 1]; got {self.settle_window!r}, {self.settle_deadline!r}.")
        for name in ("settle_tolerance", "settle_flips", "sparsity_start"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1); got {getattr(self, name)!r}.")
        if self.gate_input_lr_scale < 0:
            raise ValueError(f"gate_input_lr_scale must be >= 0; got {self.gate_input_lr_scale!r}.")
        if self.widths_from is not None:
            from .baselines import read_widths

            if self.method != "random":
                raise ValueError("widths_from (the kept widths of another run) is a setting of method='random'.")
            read_widths(self.widths_from)  # fails now, not after the data are loaded

    @property
    def budget_allocation(self) -> str:
        """The allocation in force. ``allocation``, where "auto" means "uniform" for channel
        gates and "global" for layer gates (one unit per block has no share to hold)."""
        if self.allocation != "auto":
            return self.allocation
        return "uniform" if self.gating == "channel" else "global"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. a YAML config); unknown keys raise ValueError listing known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        normal = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normal) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known settings: {sorted(known)}.")
        if normal.get("gating") in ("none", "None"):
            normal["gating"] = None
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        return cls(**{k: _coerce(k, v, types[k]) for k, v in normal.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, kind: str) -> Any:
    """Turn a setting read from YAML into its field's type (YAML reads ``5e-4`` as a string)."""
    if value is None or kind == "str" or kind == "str | None":
        return value
    try:
        if isinstance(value, bool) and not kind.startswith("bool"):
            raise ValueError  # YAML's true/false is not a number
        if kind.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind.startswith("int"):
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name} must be of type {kind}; got {value!r}.") from None
    return value


# ----------------------------------------------------------------------------- helpers


def select_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple MPS, then the CPU; any other name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Where data is looked for (:func:`consensus_tutorial.data.data_root`): ``data_root``
    if given, else ``$CONSENSUS_TUTORIAL_DATA``, else ``~/.cache/consensus-tutorial/data``."""
    return data_root_of(data_root)


def build_for(config: TrainConfig) -> ResNet:
    """The model a config describes (gated as the method needs)."""
    num_classes = dataset_info(config.dataset)["num_classes"]
    return build_model(
        config.arch, num_classes, gating=config.gating, position=config.position,
        gate=config.gate, gate_depth=config.gate_depth, init_prob=config.init_prob,
        momentum=config.gate_momentum,
    )


def _gate_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """One optimizer group per gate for its per-unit logits, and one for its input
    weights (``gate_input_lr_scale`` times the rate). With ``gate_lr_scale="cost"`` each
    gate's rate is ``gate_lr`` times its units' mean FLOPs over the mean of all gates."""
    gates = gate_modules(model)
    scale = {n: 1.0 for n in gates}
    if gates and config.gate_lr_scale == "cost":
        means = {n: float(c.mean()) for n, c in unit_flops(model).items()}
        overall = sum(means.values()) / len(means)
        scale = {n: means[n] / overall for n in gates}
    groups = []
    for name, gate in gates.items():
        lr = config.gate_lr * scale[name]
        inputs = gate.input_parameters()
        ids = {id(p) for p in inputs}
        groups.append({"params": [p for p in gate.parameters() if id(p) not in ids], "lr": lr})
        if inputs:
            groups.append({"params": inputs, "lr": lr * config.gate_input_lr_scale})
    return groups


#: the weights' learning-rate schedule: name -> (optimizer, total steps) -> scheduler
SCHEDULES_BY_NAME: dict[str, Callable[[torch.optim.Optimizer, int, Any], Any]] = {
    "cosine": lambda opt, total, config: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
    "step": lambda opt, total, config: torch.optim.lr_scheduler.MultiStepLR(
        opt, [int(total * 0.5), int(total * 0.75)], 0.1),
    "onecycle": lambda opt, total, config: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total),
}


def make_weight_optimizer(params: list, config: TrainConfig, total_steps: int):
    """SGD (nesterov momentum, weight decay) over ``params`` and its schedule over
    ``total_steps``; returns (optimizer, scheduler)."""
    sgd = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    return sgd, SCHEDULES_BY_NAME[config.schedule](sgd, total_steps, config)


def make_optimizers(model: nn.Module, config: TrainConfig, steps_per_epoch: int):
    """The weights' SGD with its schedule (:func:`make_weight_optimizer`), and the gate
    parameters on their own optimizer (``GATE_OPTIMIZERS[gate_optimizer]``, no weight
    decay, constant rate): under the weights' SGD the sparsity term's gradient is too
    small to move the gate scores within a short schedule.
    Returns (optimizers, scheduler of the SGD optimizer)."""
    gate_ids = {id(p) for g in gate_modules(model).values() for p in g.parameters()}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    sgd, scheduler = make_weight_optimizer(weights, config, config.epochs * steps_per_epoch)
    optimizers = [sgd]
    if gate_ids:
        optimizers.append(GATE_OPTIMIZERS[config.gate_optimizer](_gate_groups(model, config), config))
    return optimizers, scheduler


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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- loop


@dataclass
class FitState:
    """What :func:`fit` carries from epoch to epoch (and what a checkpoint holds)."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    elapsed: float = 0.0
    #: wall seconds of the processes before this one (a resumed run), up to their last checkpoint
    wall_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)


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
    network), seconds; in the epoch in which the gates froze (``settle="freeze"``),
    ``settle``: {step, epoch, reason, removed, top1_live, top1_frozen, disagreement}; in
    the epoch of the hand-over to the extracted network, ``handover_step``.

    With ``checkpoint``, a checkpoint is written atomically after every epoch (before
    ``on_epoch_end`` is called); with ``resume`` and an existing checkpoint, training
    continues from it and ends exactly as an unbroken run would (CPU, same seed).
    """
    from .baselines import method_hooks as default_hooks

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
    epochs = tqdm(range(state.epoch, config.epochs), desc="epochs", initial=state.epoch,
                  total=config.epochs, disable=not progress)
    for epoch in epochs:
        record = loop.epoch(state, epoch, progress)
        epochs.set_postfix(top1=f"{record['top1_gated']:.2f}")
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, state, model, trainee, train_loader, config, hooks, settler)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return FitResult(state.history, trainee.net, state.wall_before)


def make_objective(config: TrainConfig, total_steps: int) -> Objective:
    """The training objective of ``config`` for a run of ``total_steps`` steps."""
    return Objective(
        target_rate=config.target_rate, lambda_sp=config.lambda_sp, lambda_pol=config.lambda_pol,
        polarizer=config.polarizer, zhuang_t=config.zhuang_t,
        pol_warmup_steps=int(config.pol_warmup * total_steps), flops_aware=config.flops_aware,
        sparsity_on=config.sparsity_on, allocation=config.budget_allocation, min_keep=config.min_keep,
        sparsity_start_steps=int(config.sparsity_start * total_steps),
    )


def make_settler(config: TrainConfig, total_steps: int) -> Settler | None:
    """The :class:`~consensus_tutorial.settle.Settler` of ``config`` (None with ``settle="live"``)."""
    if config.settle == "live":
        return None
    from .baselines import masks_for_flops

    def budget_masks(model: ResNet) -> dict:
        gates = gate_modules(model)
        rates = {n: g.firing_rate.detach().float().cpu() for n, g in gates.items()}
        floors = {n: 0 if config.gating == "layer" else max(1, config.min_channels, math.ceil(config.min_keep * g.units - 1e-9))
                  for n, g in gates.items()}  # a layer gate may close its block; a channel layer keeps one channel
        return masks_for_flops(model, rates, config.target_rate, uniform=config.budget_allocation == "uniform",
                               min_channels=floors)

    return Settler(
        masks_of=lambda model: _masks(model, config), budget_masks=budget_masks, target_rate=config.target_rate,
        flops_aware=config.flops_aware, window=int(config.settle_window), tolerance=config.settle_tolerance,
        deadline_step=max(1, round(config.settle_deadline * total_steps)), max_flips=config.settle_flips,
    )


def _hand_over(model: ResNet, trainee: Trainee, config: TrainConfig, total_steps: int) -> None:
    """Switch ``trainee`` to the extracted network of ``model`` (gates all frozen)."""
    from .handover import hand_over

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

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        """One optimizer step; returns the loss terms as floats."""
        net, optimizers = self.trainee.net, self.trainee.optimizers
        record = None if self.trainee.handed_over else GateRecord()
        with _autocast(self.device, self.config.amp):
            logits = net(x) if record is None else net(x, record=record)
        loss, terms = self.objective(net, logits, y, step, record)
        loss = loss + self.hooks.extra_loss(self.model)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        self.trainee.scheduler.step()
        self.hooks.after_step(self.model)
        return {"loss": loss.item(), **terms}

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
        started = time.perf_counter()
        self.hooks.on_epoch_start(self.model, epoch)
        handover = self._maybe_hand_over(state.step)
        self.trainee.net.train()
        sums = {"loss": 0.0, "ce": 0.0, "sparsity": 0.0, "polarization": 0.0, "lambda_pol": 0.0}
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
            if batches % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / batches:.3f}")
        record = {"epoch": epoch + 1, "lr": self.trainee.scheduler.get_last_lr()[0]}
        record |= {("train_loss" if k == "loss" else k): v / max(batches, 1) for k, v in sums.items()}
        record |= _gate_report(self.model, self.trainee.net, self.test_loader, self.config)
        if settled is not None:
            record["settle"] = settled
        if handover is not None:
            record["handover_step"] = handover
        record["seconds"] = time.perf_counter() - started
        state.elapsed += record["seconds"]
        state.history.append(record)
        state.epoch = epoch + 1
        return record

    def _settle(self, masks: dict, epoch: int) -> dict:
        """Freeze the gates to ``masks``; measure the test set just before and after."""
        live = evaluate(self.model, self.test_loader, masks, amp=self.config.amp)
        self.settler.freeze(self.model, masks)
        frozen = evaluate(self.model, self.test_loader, amp=self.config.amp)
        self.model.train()
        return self.settler.record | {
            "epoch": epoch + 1, "removed": round(self.settler.record["removed"], 4),
            "top1_live": live["top1"], "top1_frozen": frozen["top1"], "disagreement": live["disagreement"],
        }


def _save_checkpoint(path, state, model, trainee, train_loader, config, hooks, settler) -> None:
    payload = {
        "config": config.to_dict(), "epoch": state.epoch, "step": state.step,
        "history": state.history, "elapsed": state.elapsed,
        "wall": state.wall_before + time.perf_counter() - state.started,
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in trainee.optimizers],
        "scheduler": trainee.scheduler.state_dict(),
        "train_loader": train_loader.state_dict(), "rng": _rng_state(),
        "method": hooks.state_dict(), "settle": settler.state_dict() if settler else {},
    }
    if trainee.handed_over:
        payload["extracted"] = {"spec": trainee.net.spec, "state": trainee.net.state_dict()}
    atomic_torch_save(payload, path)


def _load_checkpoint(path, model, trainee, train_loader, config, hooks, settler) -> FitState:
    device = next(model.parameters()).device
    saved = load_torch_file(path, "checkpoint", device)
    _check_same_config(saved["config"], config)
    model.load_state_dict(saved["model"])
    if "extracted" in saved:
        net = PrunedResNet(saved["extracted"]["spec"]).to(device)
        net.load_state_dict(saved["extracted"]["state"])
        sgd, scheduler = make_weight_optimizer(list(net.parameters()), config, config.epochs * len(train_loader))
        trainee.net, trainee.optimizers, trainee.scheduler, trainee.handed_over = net.train(), [sgd], scheduler, True
    for opt, opt_state in zip(trainee.optimizers, saved["optimizers"]):
        opt.load_state_dict(opt_state)
    trainee.scheduler.load_state_dict(saved["scheduler"])
    train_loader.load_state_dict(saved["train_loader"])
    _set_rng_state(saved["rng"])
    hooks.load_state_dict(saved.get("method", {}))
    if settler is not None:
        settler.load_state_dict(saved.get("settle", {}))
    return FitState(saved["epoch"], saved["step"], saved["history"], saved["elapsed"],
                    wall_before=saved.get("wall", saved["elapsed"]))


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


def _masks(model: ResNet, config: TrainConfig) -> dict:
    gates = gate_modules(model)
    if all(g.is_frozen for g in gates.values()):
        return {n: g.mask.bool().cpu() for n, g in gates.items()}
    return consensus_masks(model, config.threshold, min_channels=config.min_channels, round_to=config.round_to,
                           min_share=config.min_keep)


_RESUME_FREE = {"device", "threads", "data_root", "download"}


def _check_same_config(saved: dict, config: TrainConfig) -> None:
    current = config.to_dict()
    differ = sorted(k for k in current if k not in _RESUME_FREE and saved.get(k) != current[k])
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differ)
        raise ValueError(
            f"the checkpoint was written with other settings ({details}); resume with the same "
            "settings, or start a new run in another --out folder."
        )


# ----------------------------------------------------------------------------- a whole run


def load_data(config: TrainConfig, device: torch.device, progress: bool = True) -> tuple[ImageSet, ImageSet]:
    root = default_data_root(config.data_root)
    train = load_dataset(config.dataset, root, "train", download=config.download,
                         limit=config.limit_train, seed=config.seed, verify_checksums=config.verify_checksums)
    test = load_dataset(config.dataset, root, "test", download=config.download,
                        limit=config.limit_test, seed=config.seed, verify_checksums=config.verify_checksums)
    if progress:
        print(f"data: {len(train)} train images ({train.source}), {len(test)} test images ({test.source})",
              file=sys.stderr)
    return train, test


class RunResult(dict):
    """The metrics of a run (a dict, as written to ``metrics.json``), with the objects
    behind them as attributes: ``history`` (per-epoch records), ``model`` (the trained
    gated model, gates frozen to the consensus masks) and ``subnetwork`` (the extracted
    network)."""

    history: list[dict]
    model: ResNet
    subnetwork: nn.Module


def run(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Train, extract and evaluate as ``config`` says; return the metrics (a
    :class:`RunResult`, which also holds the history, the model and the sub-network).

    With ``out``, writes there: ``checkpoint.pt`` (every epoch), ``history.json``,
    ``metrics.json`` and ``subnetwork.pt`` (load it with ``ct.load_subnetwork``).
    """
    config = config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    started = time.perf_counter()
    train_set, test_set = load_data(config, device, progress)
    channels_last = device.type == "cuda"
    train_loader = BatchLoader(train_set, config.batch_size, train=True, device=device, seed=config.seed,
                               channels_last=channels_last)
    test_loader = BatchLoader(test_set, 500, train=False, device=device, channels_last=channels_last)
    torch.manual_seed(config.seed)
    model = build_for(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)  # left by a write that was killed
    fitted = fit(model, train_loader, test_loader, config,
                 checkpoint=out_dir / "checkpoint.pt" if out_dir else None, resume=resume,
                 on_epoch_end=on_epoch_end, progress=progress)
    metrics, subnet = finish(model, fitted, test_loader, config)
    history = fitted.history
    metrics["wall_time_s"] = round(fitted.wall_before + time.perf_counter() - started, 1)
    metrics["train_time_s"] = round(sum(h["seconds"] for h in history), 1)
    metrics["command"] = command or " ".join(sys.argv)
    metrics["device"] = str(device)
    metrics["machine"] = machine_info(device)
    result = RunResult(metrics)
    result.history, result.model, result.subnetwork = history, model, subnet
    if out_dir:
        save_subnetwork(result.subnetwork, out_dir / "subnetwork.pt")
        atomic_json(out_dir / "history.json", history)
        atomic_json(out_dir / "metrics.json", dict(result))
    return result


def finish(model: ResNet, fitted: FitResult, test_loader, config: TrainConfig) -> tuple[dict[str, Any], nn.Module]:
    """Consensus masks, freezing, extraction and the final numbers of a trained model;
    returns (metrics, extracted network).

    The gated model's top-1 and disagreement are those of the last epoch's evaluation
    (``history[-1]``): the model has not changed since, so they are not measured twice.
    When training handed over to the extracted network, that network is the result."""
    history = fitted.history
    gates = gate_modules(model)
    masks = _masks(model, config) if gates else None
    final = history[-1]
    if gates:
        freeze_gates(model, masks)
    subnet = fitted.network.eval() if isinstance(fitted.network, PrunedResNet) else extract_subnetwork(model, masks)
    extracted = evaluate(subnet, test_loader, amp=config.amp)
    dense = build_model(config.arch, model.num_classes)
    input_size = (1, *model.input_shape)
    flops_dense, flops_extracted = count_flops(dense, input_size), count_flops(subnet, input_size)
    return {
        "method": config.method,
        "version": __version__,
        "epochs": len(history),
        "top1_gated": round(final["top1_gated"], 2),
        "top1_extracted": round(extracted["top1"], 2),
        "disagreement": final.get("disagreement"),
        "flops_dense": flops_dense,
        "flops_extracted": flops_extracted,
        "pruning_rate_flops": round(1.0 - flops_extracted / flops_dense, 4),
        "params_dense": count_params(dense),
        "params_extracted": count_params(subnet),
        "kept_units": {n: int(m.sum()) for n, m in masks.items()} if masks else {},
        "settle": next((h["settle"] for h in history if "settle" in h), None),
        "flops_unit": "multiply-accumulates of conv and linear layers per image",
        "config": config.to_dict(),
    }, subnet
