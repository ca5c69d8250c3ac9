"""Checkpoints of a run: written atomically after every epoch, read back on resume
(model, optimizers, schedule, RNG states, the method's and the settler's state), and
refused with a clear message when they were written with other settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..extraction import PrunedResNet
from ..io import atomic_torch_save, load_torch_file
from . import distributed
from .optim import make_weight_optimizer

if TYPE_CHECKING:
    from .config import TrainConfig


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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path, state, model, trainee, train_loader, config, hooks, settler) -> None:
    """Write the checkpoint (rank 0), with the random state of every process."""
    rng = distributed.gather_objects(_rng_state())
    if distributed.rank() != 0:
        return
    payload = {
        "config": config.to_dict(), "epoch": state.epoch, "step": state.step,
        "history": state.history, "elapsed": state.elapsed,
        "wall": state.wall_before + time.perf_counter() - state.started,
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in trainee.optimizers],
        "scheduler": trainee.scheduler.state_dict(),
        "train_loader": train_loader.state_dict(), "rng": rng[0], "rng_ranks": rng, "processes": len(rng),
        "method": hooks.state_dict(), "settle": settler.state_dict() if settler else {},
    }
    if trainee.handed_over:
        payload["extracted"] = {"spec": trainee.net.spec, "state": trainee.net.state_dict()}
    atomic_torch_save(payload, path)


def _load_checkpoint(path, model, trainee, train_loader, config, hooks, settler) -> FitState:
    device = next(model.parameters()).device
    saved = load_torch_file(path, "checkpoint", device)
    _check_same_config(saved["config"], config)
    if saved.get("processes", 1) != distributed.world():
        raise ValueError(f"the checkpoint was written by a run of {saved.get('processes', 1)} process(es); resume it "
                         f"with as many (torchrun --nproc_per_node={saved.get('processes', 1)}), not "
                         f"{distributed.world()}.")
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
    _set_rng_state(saved["rng_ranks"][distributed.rank()] if "rng_ranks" in saved else saved["rng"])
    hooks.load_state_dict(saved.get("method", {}))
    if settler is not None:
        settler.load_state_dict(saved.get("settle", {}))
    return FitState(saved["epoch"], saved["step"], saved["history"], saved["elapsed"],
                    wall_before=saved.get("wall", saved["elapsed"]))


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
