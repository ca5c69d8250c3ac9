"""One whole run (:func:`run`, which the command line calls): data, model, the loop of
:func:`~consensus_tutorial.training.loop.fit`, the consensus masks, extraction, evaluation and
the files of a run folder."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..consensus import freeze_gates, gate_modules
from ..data import BatchLoader, ImageSet, dataset_info, load_dataset
from ..data import data_root as data_root_of
from ..extraction import PrunedResNet, extract_subnetwork, save_subnetwork
from ..io import atomic_json, machine_info, remove_stale_temporaries
from ..flops import count_flops, count_params
from ..models import ResNet, build_model
from . import distributed
from .config import TrainConfig
from .loop import FitResult, _masks, evaluate, fit



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


def load_data(config: TrainConfig, progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """The train and test sets a config names, from its data root (see :func:`default_data_root`)."""
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
    Under torchrun only rank 0 extracts, evaluates and writes; the other processes return
    ``{"rank": r}`` once it has.
    """
    config = config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    ranks = distributed.from_environment()
    device = _process_device(config, ranks)
    joined = distributed.start(ranks, device)
    try:
        started = time.perf_counter()
        model, train_loader, test_loader = _prepare(config, ranks, device, progress and ranks.is_main)
        out_dir = Path(out) if out else None
        if out_dir and ranks.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out_dir)  # left by a write that was killed
        fitted = fit(model, train_loader, test_loader, config,
                     checkpoint=out_dir / "checkpoint.pt" if out_dir else None, resume=resume,
                     on_epoch_end=on_epoch_end, progress=progress and ranks.is_main)
        if not ranks.is_main:  # rank 0 extracts, evaluates and writes
            distributed.barrier()
            return RunResult({"rank": ranks.rank})
        metrics, subnet = finish(model, fitted, test_loader, config)
        metrics |= {"wall_time_s": round(fitted.wall_before + time.perf_counter() - started, 1),
                    "train_time_s": round(sum(h["seconds"] for h in fitted.history), 1),
                    "command": command or " ".join(sys.argv), "device": str(device),
                    "machine": machine_info(device), "processes": ranks.world}
        result = RunResult(metrics)
        result.history, result.model, result.subnetwork = fitted.history, model, subnet
        if out_dir:
            save_subnetwork(result.subnetwork, out_dir / "subnetwork.pt")
            atomic_json(out_dir / "history.json", fitted.history)
            atomic_json(out_dir / "metrics.json", dict(result))
        distributed.barrier()
        return result
    finally:
        distributed.stop(joined)


def _process_device(config: TrainConfig, ranks: distributed.Ranks) -> torch.device:
    """The device of this process: the config's, or GPU ``LOCAL_RANK`` under torchrun."""
    device = select_device(config.device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


def _prepare(config: TrainConfig, ranks: distributed.Ranks, device: torch.device,
             progress: bool) -> tuple[ResNet, BatchLoader, BatchLoader]:
    """The model (seeded: the same on every process) and the data loaders of a run."""
    torch.manual_seed(config.seed)
    train_set, test_set = load_data(config, progress)
    channels_last = device.type == "cuda"
    train_loader = BatchLoader(train_set, config.batch_size, train=True, device=device, seed=config.seed,
                               channels_last=channels_last, rank=ranks.rank, world=ranks.world)
    test_loader = BatchLoader(test_set, 500, train=False, device=device, channels_last=channels_last)
    torch.manual_seed(config.seed)
    model = build_for(config).to(device)
    if config.sync_bn and ranks.world > 1:
        if device.type != "cuda":
            raise ValueError("sync_bn: PyTorch's SyncBatchNorm runs on CUDA only; train without --sync-bn on the "
                             "CPU (each process then normalises with its own shard's batch statistics).")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, train_loader, test_loader


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

