"""Command line: ``python -m consensus_tutorial {train,evaluate} ...``.

    python -m consensus_tutorial train --dataset cifar10 --data-root ../shared/data/cifar10 \\
        --arch resnet20 --gating channel --target-rate 0.5 --epochs 2 \\
        --limit-train 2000 --limit-test 1000 --out runs/demo
    python -m consensus_tutorial evaluate runs/demo --data-root ../shared/data/cifar10

``--config FILE`` reads a YAML file whose keys are the flag names (``target-rate`` or
``target_rate``); flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from .baselines import METHODS
from .configs import load_settings
from .configs import names as config_names
from .data import DATASETS
from .models import ARCHS
from .costs import COSTS
from .objective import ALLOCATIONS
from .positions import channel_positions
from .regularizers import POLARIZERS
from .training import GATE_LR_SCALES, GATE_OPTIMIZERS, SCHEDULES_BY_NAME, SETTLE_CHOICES, TrainConfig

def flag_choices() -> dict[str, tuple]:
    """The allowed values of the flags that take a name, read from the package's tables when
    the parser is built (so a polarizer or method registered before that is a choice)."""
    return {
        "dataset": DATASETS, "arch": ARCHS, "method": tuple(METHODS), "gating": ("none", "layer", "channel"),
        "position": channel_positions(), "gate": ("dynamic", "static"), "polarizer": tuple(POLARIZERS),
        "schedule": tuple(SCHEDULES_BY_NAME), "sparsity_on": ("hard", "soft"), "gate_optimizer": tuple(GATE_OPTIMIZERS),
        "allocation": ("auto", *ALLOCATIONS), "settle": SETTLE_CHOICES, "gate_lr_scale": GATE_LR_SCALES,
        "cost": tuple(COSTS),
    }


HELP = {
    "dataset": "data set", "data_root": "folder with the data (official layout or JPEG packs); "
    "default $CONSENSUS_TUTORIAL_DATA or ~/.cache/consensus-tutorial/data",
    "download": "download the data set into --data-root if it is missing",
    "arch": "network (resnet18 for tiny-imagenet)", "method": "pruning method or baseline",
    "gating": "gate granularity", "position": "channel-gate position",
    "target_rate": "pruning rate in [0, 1): share of FLOPs (or units) to remove",
    "epochs": "training epochs", "batch_size": "batch size", "limit_train": "use a class-balanced subset of N train images",
    "limit_test": "use a class-balanced subset of N test images", "seed": "random seed", "device": "auto, cpu, cuda, mps",
    "allocation": "how the budget is shared by the gated layers: one global budget, the same share per layer "
    "(uniform), or auto (uniform for channel gates, global for layer gates)",
    "min_keep": "per-layer floor: every gated layer keeps at least this share of its units",
    "settle": "freeze the gates once the mask meets the target and stops changing (freeze), or keep them live",
    "settle_window": "steps the consensus mask must stay unchanged before the gates freeze",
    "settle_tolerance": "allowed |FLOPs share removed - target rate| for the gates to freeze",
    "settle_flips": "largest share of units the mask may change between two readings and still count as settled",
    "sparsity_start": "share of the steps before the sparsity target starts to act",
    "settle_deadline": "share of the steps after which the gates freeze anyway (mask cut to the budget)",
    "gate_lr_scale": "scale each gate's learning rate by its units' FLOPs (cost) or not (none)",
    "gate_input_lr_scale": "learning-rate factor of a dynamic gate's input weights (the bias keeps gate_lr)",
    "widths_from": "method random: keep as many channels per layer as the run in this folder kept",
    "train_extracted": "once every gate is frozen, train the physically extracted (smaller) network",
    "gate": "gate kind: dynamic (MLP over pooled features) or static (one logit per unit)",
    "gate_depth": "K, the linear layers of a dynamic gate's MLP",
    "flops_aware": "weigh each unit by its cost, so that target_rate is a share of the cost (else of the units)",
    "cost": "what the budget counts: FLOPs (MACs) or latency measured on this device (needs --latency-table)",
    "latency_table": "cost latency: a latency table of this network on this device (benchmarks/latency_table.py)",
    "sparsity_on": "the sparsity target acts on the hard gates (through the STE) or on the probabilities",
    "polarizer": "polarization regularizer", "zhuang_t": "t of the zhuang polarizer (keeps about 1/2 - t/4)",
    "lambda_sp": "weight of the sparsity target", "lambda_pol": "weight of the polarizer",
    "pol_warmup": "share of the steps over which the polarizer's weight rises from 0",
    "init_prob": "initial gate probability (gates start open)",
    "gate_momentum": "momentum of the firing-rate moving average",
    "threshold": "firing-rate threshold of the consensus mask",
    "min_channels": "fewest channels a channel gate keeps", "round_to": "round kept channels up to a multiple",
    "lr": "peak learning rate of the weights (SGD, Nesterov)", "momentum": "SGD momentum",
    "weight_decay": "weight decay of the weights (none on gates)", "schedule": "learning-rate schedule",
    "gate_optimizer": "optimizer of the gate parameters", "gate_lr": "learning rate of the gate parameters",
    "amp": "bfloat16 autocast on CUDA",
    "sync_bn": "several CUDA processes (torchrun): batch norm over the global batch, not each process's shard", "threads": "torch CPU threads (default: torch's choice)",
    "verify_checksums": "check the official CIFAR files against their published md5 sums",
    "prune_at": "l1 and bn-polarization: share of the epochs trained before pruning",
    "bn_lambda": "bn-polarization: weight of the polarizer on the BN scales",
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    choices = flag_choices()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = "none" if f.default is None else f.default
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{HELP[f.name]} (default: {default})"}
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
        if f.name in choices:
            kwargs["choices"] = choices[f.name]
        parser.add_argument(flag, type=kind, **kwargs)


RUN_FILES = ("metrics.json", "history.json", "checkpoint.pt", "subnetwork.pt")


class UsageError(ValueError):
    """A mistake on the command line; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consensus_tutorial",
                                     description="One-pass structured pruning with a consensus sub-network.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train, extract and evaluate one run",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--config", type=Path,
                       help="YAML file of settings (flag names as keys), or the name of a shipped one: "
                       + ", ".join(config_names()))
    train.add_argument("--out", type=Path, required=True, help="run folder for metrics, history, checkpoint, subnetwork")
    train.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt if it exists")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    _add_train_flags(train)
    ev = sub.add_parser("evaluate", help="evaluate a run's subnetwork.pt alone on a test set")
    ev.add_argument("run_dir", type=Path, help="a run folder written by 'train'")
    ev.add_argument("--data-root", required=False,
                    help="folder with the test data; default $CONSENSUS_TUTORIAL_DATA, else ~/.cache/consensus-tutorial/data")
    ev.add_argument("--dataset", choices=DATASETS, help="default: the run's data set")
    ev.add_argument("--limit-test", type=int, help="default: the run's own test subset")
    ev.add_argument("--no-verify-checksums", dest="verify_checksums", action="store_false",
                    help="read official CIFAR files whose md5 checksums differ from the published ones")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    ev.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {}
    if args.config is not None:
        values.update(load_settings(args.config))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in known})
    return TrainConfig.from_dict(values).validate()


def check_out_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over a run unless ``--resume`` or ``--overwrite`` says so."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for the run.")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise UsageError(
            f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out.")
    for name in found:
        (out / name).unlink()


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from .training import run
    from .training.distributed import from_environment

    config = config_from_args(args)
    main_process = from_environment().is_main  # under torchrun, rank 0 owns the run folder
    if main_process:
        check_out_folder(args.out, args.resume, args.overwrite)
    command = _launcher() + " -m consensus_tutorial " + " ".join(shlex.quote(a) for a in argv)
    metrics = run(config, args.out, resume=args.resume, progress=not args.quiet, command=command)
    if not main_process:
        return 0
    keys = ("method", "top1_gated", "top1_extracted", "flops_dense", "flops_extracted",
            "pruning_rate_flops", "params_dense", "params_extracted", "wall_time_s")
    print(json.dumps({k: metrics[k] for k in keys}, indent=1))
    print(f"wrote {args.out}/metrics.json, history.json, subnetwork.pt, checkpoint.pt")
    return 0


def _launcher() -> str:
    """How this process was started, for the command a run folder records."""
    from .training.distributed import from_environment

    ranks = from_environment()
    world, local = ranks.world, ranks.local_world
    if world == 1:
        return "python"
    nodes = f"--nnodes={world // local} " if world > local else ""
    return f"torchrun {nodes}--nproc_per_node={local}"


def read_run_metrics(run_dir: Path) -> dict:
    """A run folder's ``metrics.json`` ({} when there is none)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}); pass --dataset (and --limit-test) instead.") from None
    if not isinstance(saved, dict):
        raise UsageError(f"{path} is not a run's metrics (a JSON object); pass --dataset instead.")
    return saved


def _evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run's ``subnetwork.pt``. Only the data set, the test subset and its seed
    come from the run's ``metrics.json``; where data is read from and whether checksums
    are verified are the user's choice (a run folder from elsewhere must not decide them)."""
    from .data import BatchLoader, data_root, load_dataset
    from .extraction import load_subnetwork
    from .flops import count_flops
    from .training import evaluate, select_device

    saved = read_run_metrics(args.run_dir)
    config = saved.get("config", {}) if isinstance(saved.get("config"), dict) else {}
    dataset = args.dataset or config.get("dataset")
    if dataset not in DATASETS:
        raise UsageError(f"the data set of {args.run_dir} is not known (no usable metrics.json); "
                         f"pass --dataset (one of {', '.join(DATASETS)}).")
    limit = args.limit_test if args.limit_test is not None else config.get("limit_test")
    device = select_device(args.device)
    subnet = load_subnetwork(args.run_dir / "subnetwork.pt", map_location=device)
    try:
        test = load_dataset(dataset, data_root(args.data_root), "test", limit=limit, seed=int(config.get("seed", 0)),
                            verify_checksums=args.verify_checksums)
    except FileNotFoundError as error:
        hint = config.get("data_root")
        raise FileNotFoundError(f"{error}" + (f"\n(the run was trained with --data-root {hint})" if hint else "")) from None
    top1 = evaluate(subnet, BatchLoader(test, 500, train=False, device=device))["top1"]
    result = {"top1_extracted": round(top1, 2), "flops_extracted": count_flops(subnet), "test_images": len(test),
              "recorded_top1_extracted": saved.get("top1_extracted")}
    print(json.dumps(result, indent=1))
    return 0


#: errors that are the user's to fix: one line, exit code 2 (``--debug`` shows the traceback)
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, [a for a in argv if a != "--debug"])
        return _evaluate(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"error: {str(error).strip() or type(error).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
