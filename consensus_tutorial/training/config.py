"""The settings of a run: :class:`TrainConfig`, its checks and its reading from YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_choice, check_rate
from ..data import DATASETS
from ..models import ARCHS
from ..objective import ALLOCATIONS
from ..positions import channel_positions
from ..regularizers import POLARIZERS
from .optim import GATE_OPTIMIZERS, SCHEDULES_BY_NAME


SETTLE_CHOICES = ("freeze", "live")
GATE_LR_SCALES = ("none", "cost")


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
    cost: str = "flops"
    latency_table: str | None = None
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
    sync_bn: bool = False
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
        from ..baselines import METHODS, method_model_settings

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
        self._validate_cost()
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

    def _validate_cost(self) -> None:
        from ..costs import COSTS, load_latency_table

        check_choice("cost", self.cost, tuple(COSTS))
        if self.cost == "latency":
            if self.latency_table is None:
                raise ValueError("cost='latency' needs latency_table, a table measured on this device "
                                 "(python benchmarks/latency_table.py --out FILE).")
            load_latency_table(self.latency_table)  # fails now, not after the data are loaded
        elif self.latency_table is not None:
            raise ValueError("latency_table is read with cost='latency' only; pass --cost latency or drop it.")

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
            from ..baselines import read_widths

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

