"""One-pass training: a gated (or plain) model in; history, masks and a sub-network out.

:func:`run` is the whole experiment (the command line calls it, and it is ``ct.train`` at
the top level): data, model, the loop of :func:`fit`, consensus masks, extraction,
evaluation and the files of a run folder. :func:`fit` is the loop alone, for notebooks
that bring their own model and data. One idea per module:

* ``training.config``: :class:`TrainConfig`, every setting of a run,
  and its checks (``validate`` returns a checked copy);
* ``training.optim``: the optimizers and schedules (registries);
* ``training.loop``: the epoch loop, evaluation, the hand-over;
* ``training.checkpoint``: atomic checkpoints and resuming;
* ``training.runner``: one run, from settings to a run folder.

A run folder keeps the config in ``metrics.json`` and in ``checkpoint.pt``, which is written
atomically after every epoch, so a killed run resumes (``resume=True``) and ends as if it
had never stopped.
"""

from __future__ import annotations

from ..data import DATA_ENV
from .config import GATE_LR_SCALES, SETTLE_CHOICES, TrainConfig
from .loop import FitResult, Trainee, evaluate, fit, make_objective, make_settler
from .optim import GATE_OPTIMIZERS, SCHEDULES_BY_NAME, _gate_groups, make_optimizers, make_weight_optimizer
from .runner import RunResult, build_for, default_data_root, finish, load_data, run, select_device

__all__ = [
    "DATA_ENV", "GATE_LR_SCALES", "GATE_OPTIMIZERS", "SCHEDULES_BY_NAME", "SETTLE_CHOICES",
    "FitResult", "RunResult", "Trainee", "TrainConfig", "build_for", "default_data_root", "evaluate",
    "finish", "fit", "load_data", "make_objective", "make_optimizers", "make_settler",
    "make_weight_optimizer", "run", "select_device", "_gate_groups",
]
