"""consensus-tutorial: one-pass structured pruning with binary gates, a straight-through
estimator and polarization regularization, ending in one static "consensus" sub-network.

    import consensus_tutorial as ct
    model = ct.cifar_resnet(20, gating="channel", position="b")
    ...train...
    subnet = ct.extract_subnetwork(ct.freeze_gates(model, ct.consensus_masks(model)))
"""

from .consensus import (
    consensus_masks,
    disagreement_rate,
    freeze_gates,
    frozen_masks,
    gate_modules,
    unfreeze_gates,
)
from .extraction import (
    PrunedResNet,
    extract_subnetwork,
    load_subnetwork,
    save_subnetwork,
    subnetwork_spec,
)
from .flops import count_flops, count_params, measure_latency, predicted_flops, unit_flops, unit_params
from .gates import DynamicGate, Gate, GateRecord, StaticGate, binarize
from .models import ResNet, build_model, cifar_resnet, tiny_resnet18
from .regularizers import keep_ratio, polarization, sparsity_penalty
from . import data, plots, toy, training, widgets  # noqa: E402  (modules the notebooks use)
from .training import TrainConfig
from .training import run as train

from ._version import __version__

__all__ = [
    "__version__", "data", "plots", "toy", "training", "widgets", "train", "TrainConfig",
    "binarize", "Gate", "GateRecord", "DynamicGate", "StaticGate",
    "polarization", "sparsity_penalty", "keep_ratio",
    "ResNet", "cifar_resnet", "tiny_resnet18", "build_model",
    "gate_modules", "consensus_masks", "freeze_gates", "unfreeze_gates", "frozen_masks",
    "disagreement_rate",
    "extract_subnetwork", "subnetwork_spec", "PrunedResNet", "save_subnetwork", "load_subnetwork",
    "count_flops", "count_params", "predicted_flops", "unit_flops", "unit_params", "measure_latency",
]
