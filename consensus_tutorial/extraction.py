"""Surgery: from a gated model and its masks to a plain, physically smaller network.

With the masks fixed, every closed unit is removed:

* layer gating: a closed block with an identity shortcut is dropped; a closed
  down-sampling block keeps only its shortcut;
* position (a): conv1 reads only the kept block-input channels (a gather before conv1);
* position (b): conv1's closed output channels, their BN entries and conv2's matching
  input channels are cut;
* position (c): conv2's closed output channels and their BN entries are cut, and the
  kept channels are added back at their places before the residual add.

Edge cases stay exact: when every channel of a block closes, what the residual branch
still computes is input-independent (a BN bias, or a constant hidden map at (a)), and
that constant is kept; at (c) the branch disappears. The residual path is never cut.

The result is a :class:`PrunedResNet` described by a small, JSON-like *spec*; it gives the
same logits as the gated model with its gates frozen to the masks (eval mode).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .consensus import consensus_masks, frozen_masks, gate_modules
from .io import FileFormatError, atomic_torch_save, load_torch_file
from .models import GatedBasicBlock, ResNet, conv3x3, make_shortcut
from .positions import POSITIONS, position_name

SPEC_FORMAT = "consensus-tutorial-subnetwork"
SPEC_VERSION = 1
BRANCHES = ("conv", "const_hidden", "bias", "none")


# ----------------------------------------------------------------------------- spec


def block_spec(name: str, block: GatedBasicBlock, mask: torch.Tensor | None) -> dict[str, Any]:
    """The pruned shape of one block for a 0/1 ``mask`` of its gate (None: keep all).

    Keys: name, in_channels, out_channels, stride, shortcut ("identity", "A", "B"),
    branch (one of ``BRANCHES``), in_index (kept conv1 input channels or None = all),
    mid_channels (conv1 outputs kept), out_index (kept conv2 outputs or None = all),
    dropped (True when the block computes the identity and is left out).
    """
    spec: dict[str, Any] = dict(
        name=name, in_channels=block.in_channels, out_channels=block.out_channels,
        stride=block.stride, shortcut=block.shortcut_kind, branch="conv", in_index=None,
        mid_channels=block.out_channels, out_index=None,
    )
    where = block.gated_position
    if where is not None and mask is not None:
        kept = [int(j) for j in torch.as_tensor(mask).bool().nonzero().flatten()]
        POSITIONS[where].cut(spec, kept, block.gate.units)
    spec["dropped"] = spec["branch"] == "none" and spec["shortcut"] == "identity"
    return spec


def resolve_masks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None):
    """The masks to cut with: ``masks`` if given, else the frozen masks if every gate is
    frozen, else :func:`~consensus_tutorial.consensus_masks` with its defaults.
    Returns None for an ungated model."""
    if not gate_modules(model):
        return None
    if masks is not None:
        return dict(masks)
    return frozen_masks(model) or consensus_masks(model)


def subnetwork_spec(model: ResNet, masks: Mapping[str, torch.Tensor] | None = None) -> dict:
    """The architecture the extracted network will have (no weights), as plain data."""
    if not isinstance(model, ResNet):
        raise TypeError(
            f"extraction works on the package's ResNets (ct.cifar_resnet, ct.tiny_resnet18); got {type(model).__name__}."
        )
    masks = resolve_masks(model, masks)
    blocks = []
    for name, block in model.blocks():
        mask = None if masks is None or block.gate is None else masks[f"{name}.gate"]
        blocks.append(block_spec(name, block, mask))
    return dict(
        format=SPEC_FORMAT, version=SPEC_VERSION, input_shape=list(model.input_shape),
        stem_channels=model.conv1.out_channels, num_classes=model.num_classes,
        final_channels=model.fc.in_features, position=position_name(model.gating, model.position), blocks=blocks,
    )


# ----------------------------------------------------------------------------- modules


class PrunedBasicBlock(nn.Module):
    """A residual block of a sub-network, built from a :func:`block_spec` entry.

    (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.branch = spec["branch"]
        if self.branch not in BRANCHES:
            raise ValueError(f"unknown branch {self.branch!r} in spec; expected one of {BRANCHES}.")
        self.stride = spec["stride"]
        in_c, out_c, mid = spec["in_channels"], spec["out_channels"], spec["mid_channels"]
        self.shortcut = make_shortcut(spec["shortcut"], in_c, out_c, self.stride)
        in_index, out_index = spec["in_index"], spec["out_index"]
        self.register_buffer(
            "in_index", None if in_index is None else torch.tensor(in_index, dtype=torch.long),
            persistent=False,
        )
        self.register_buffer(
            "out_index", None if out_index is None else torch.tensor(out_index, dtype=torch.long),
            persistent=False,
        )
        branch_out = out_c if out_index is None else len(out_index)
        if self.branch == "conv":
            conv1_in = in_c if in_index is None else len(in_index)
            self.conv1 = conv3x3(conv1_in, mid, self.stride)
            self.bn1 = nn.BatchNorm2d(mid)
        if self.branch == "const_hidden":
            self.hidden = nn.Parameter(torch.zeros(mid))
        if self.branch in ("conv", "const_hidden"):
            self.conv2 = conv3x3(mid, branch_out)
            self.bn2 = nn.BatchNorm2d(branch_out)
        if self.branch == "bias":
            self.branch_bias = nn.Parameter(torch.zeros(out_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        if self.branch == "none":
            return F.relu(identity)
        if self.branch == "bias":
            return F.relu(identity + self.branch_bias.view(1, -1, 1, 1))
        if self.branch == "const_hidden":
            h_out, w_out = identity.shape[2], identity.shape[3]
            h = self.hidden.view(1, -1, 1, 1).expand(x.shape[0], -1, h_out, w_out)
        else:
            inp = x if self.in_index is None else x.index_select(1, self.in_index)
            h = F.relu(self.bn1(self.conv1(inp)))
        y = self.bn2(self.conv2(h))
        if self.out_index is not None:
            return F.relu(identity.index_add(1, self.out_index, y))
        return F.relu(identity + y)


class PrunedResNet(nn.Module):
    """The static consensus sub-network: a plain ResNet with the pruned shapes of ``spec``.

    Input (B, 3, H, W), output logits (B, num_classes). ``spec`` is kept as an attribute;
    :func:`save_subnetwork` stores it beside the ``state_dict``.
    """

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        if spec.get("format") != SPEC_FORMAT:
            raise ValueError(f"not a sub-network spec (format {spec.get('format')!r}).")
        self.spec = copy.deepcopy(dict(spec))
        self.input_shape = tuple(spec["input_shape"])
        self.conv1 = conv3x3(3, spec["stem_channels"])
        self.bn1 = nn.BatchNorm2d(spec["stem_channels"])
        self.blocks = nn.Sequential(
            *[PrunedBasicBlock(b) for b in spec["blocks"] if not b["dropped"]]
        )
        self.fc = nn.Linear(spec["final_channels"], spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ----------------------------------------------------------------------------- surgery


def _bn_constant(bn: nn.BatchNorm2d) -> torch.Tensor:
    """bn(0) in eval mode: ``beta - mu * gamma / sqrt(var + eps)``, shape (C,)."""
    return bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _bn_state(bn: nn.BatchNorm2d, prefix: str, index: torch.Tensor | None) -> dict:
    keys = ("weight", "bias", "running_mean", "running_var")
    state = {f"{prefix}.{k}": getattr(bn, k) if index is None else getattr(bn, k)[index] for k in keys}
    state[f"{prefix}.num_batches_tracked"] = bn.num_batches_tracked
    return state


def _block_state(block: GatedBasicBlock, spec: Mapping[str, Any], mask: torch.Tensor | None) -> dict:
    """The state_dict of the :class:`PrunedBasicBlock` for ``spec``, sliced from ``block``."""
    state = {f"shortcut.{k}": v for k, v in block.shortcut.state_dict().items()}
    branch = spec["branch"]
    if branch == "bias":
        return state | {"branch_bias": _bn_constant(block.bn2)}
    if branch == "none":
        return state
    mid_index = None
    if spec["mid_channels"] < block.out_channels:  # the mask named the hidden channels kept
        mid_index = torch.as_tensor(mask).bool().nonzero().flatten().to(block.conv1.weight.device)
    out_index = None if spec["out_index"] is None else torch.tensor(spec["out_index"], device=block.conv2.weight.device)
    if branch == "conv":
        w1 = block.conv1.weight
        if spec["in_index"] is not None:
            w1 = w1[:, torch.tensor(spec["in_index"], device=w1.device)]
        if mid_index is not None:
            w1 = w1[mid_index]
        state["conv1.weight"] = w1
        state |= _bn_state(block.bn1, "bn1", mid_index)
    else:  # const_hidden: conv1 sees only zeros, so its output is relu(bn1(0))
        state["hidden"] = F.relu(_bn_constant(block.bn1))
    w2 = block.conv2.weight
    if mid_index is not None:
        w2 = w2[:, mid_index]
    if out_index is not None:
        w2 = w2[out_index]
    state["conv2.weight"] = w2
    state |= _bn_state(block.bn2, "bn2", out_index)
    return state


@torch.no_grad()
def extract_subnetwork(model: ResNet, masks: Mapping[str, torch.Tensor] | None = None) -> PrunedResNet:
    """Cut the closed units out of ``model`` and return a plain, smaller network.

    Args:
        model: a ResNet from :func:`~consensus_tutorial.cifar_resnet` or
            :func:`~consensus_tutorial.tiny_resnet18`, gated or plain.
        masks: {gate name: 0/1 tensor (C,)}. By default the frozen masks when every gate
            is frozen, else :func:`~consensus_tutorial.consensus_masks` (threshold 0.5).

    Returns:
        A :class:`PrunedResNet` in eval mode on the model's device and dtype, with no gate
        modules, whose logits equal those of ``model`` with its gates frozen to the masks.
    """
    masks = resolve_masks(model, masks)
    spec = subnetwork_spec(model, masks)
    state = {"conv1.weight": model.conv1.weight} | _bn_state(model.bn1, "bn1", None)
    position = 0
    for (name, block), bspec in zip(model.blocks(), spec["blocks"]):
        if bspec["dropped"]:
            continue
        mask = None if masks is None or block.gate is None else masks[f"{name}.gate"]
        for k, v in _block_state(block, bspec, mask).items():
            state[f"blocks.{position}.{k}"] = v
        position += 1
    state |= {"fc.weight": model.fc.weight, "fc.bias": model.fc.bias}
    ref = model.fc.weight
    subnet = PrunedResNet(spec).to(device=ref.device, dtype=ref.dtype)
    subnet.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return subnet.eval()


# ----------------------------------------------------------------------------- files


def save_subnetwork(subnet: PrunedResNet, path: str | os.PathLike) -> None:
    """Save a sub-network as its spec (plain data) plus its ``state_dict``, atomically.

    The file loads with ``torch.load(path, weights_only=True)``; use
    :func:`load_subnetwork` to get the module back.
    """
    if not isinstance(subnet, PrunedResNet):
        raise TypeError(
            f"save_subnetwork takes the network returned by ct.extract_subnetwork; got {type(subnet).__name__}."
        )
    state = {k: v.detach().cpu() for k, v in subnet.state_dict().items()}
    atomic_torch_save({"spec": subnet.spec, "state_dict": state}, path)


def load_subnetwork(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> PrunedResNet:
    """Load a sub-network written by :func:`save_subnetwork` (eval mode, on ``map_location``)."""
    payload = load_torch_file(path, "sub-network", map_location)
    if not isinstance(payload, dict) or "spec" not in payload or "state_dict" not in payload:
        raise FileFormatError(f"{path} is not a sub-network saved by ct.save_subnetwork.")
    subnet = PrunedResNet(payload["spec"])
    # build in the saved floating dtype: load_state_dict would silently cast a float64
    # (or float16) sub-network to float32 and the logits would no longer match
    saved_dtype = next(
        (v.dtype for v in payload["state_dict"].values() if torch.is_floating_point(v)), None
    )
    if saved_dtype is not None:
        subnet = subnet.to(saved_dtype)
    subnet.load_state_dict(payload["state_dict"], strict=True)
    return subnet.to(map_location).eval()
