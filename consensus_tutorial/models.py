"""ResNets that can be built plain, layer-gated or channel-gated.

A residual block computes ``y = relu(shortcut(x) + F(x))`` with
``F(x) = bn2(conv2(relu(bn1(conv1(x)))))``. Gating multiplies part of it by hard gates
``g``:

* ``gating="layer"``: one unit per block, ``y = relu(shortcut(x) + g * F(x))``;
* ``gating="channel"``, ``position="a"``: the block-input channels feeding conv1 (not the
  shortcut), ``conv1(x * g)``;
* ``position="b"``: the channels after bn1 + relu, before conv2;
* ``position="c"``: the channels of bn2's output, before the residual add.

The residual path (the shortcut) is never gated.

Two families: CIFAR ResNets of depth 6n+2 (He et al. 2016, widths 16/32/64, parameter-free
option-A shortcuts) and a ResNet-18 for 64x64 Tiny ImageNet (widths 64..512, a 3x3
stride-1 stem without max-pooling, 1x1-conv option-B shortcuts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice
from .gates import GATE_KINDS, Gate, GateRecord, make_gate
from .positions import POSITIONS as GATE_POSITIONS
from .positions import GatePosition, channel_positions, position_name

GATINGS = (None, "layer", "channel")
CIFAR_DEPTHS_EXAMPLES = (20, 32, 44, 56, 110)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class OptionAShortcut(nn.Module):
    """He et al.'s parameter-free shortcut: subsample by ``stride``, zero-pad the channels.

    (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


def shortcut_kind(kind: str, in_channels: int, out_channels: int, stride: int) -> str:
    """"identity" where shapes allow it, else the family's ``kind`` ("A" or "B")."""
    if stride == 1 and in_channels == out_channels:
        return "identity"
    return kind


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The shortcut module for a resolved kind: "identity", "A" (pad) or "B" (1x1 conv + BN)."""
    if kind == "identity":
        return nn.Identity()
    if kind == "A":
        return OptionAShortcut(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class GatedBasicBlock(nn.Module):
    """A basic residual block with an optional gate (see the module docstring).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride)).
    The gate, when present, is the submodule ``gate`` with one unit per block (layer
    gating) or one per channel at the chosen position.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        shortcut: str = "A",
        gating: str | None = None,
        position: str = "b",
        gate: str = "dynamic",
        gate_depth: int = 1,
        gate_options: dict | None = None,
    ):
        super().__init__()
        check_choice("gating", gating, GATINGS)
        check_choice("position", position, channel_positions())
        check_choice("gate", gate, GATE_KINDS)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.gating, self.position = gating, position
        self.shortcut_kind = shortcut_kind(shortcut, in_channels, out_channels, stride)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = make_shortcut(self.shortcut_kind, in_channels, out_channels, stride)
        self.gate: Gate | None = None
        #: "layer", "a", "b", "c" (a name of ``consensus_tutorial.positions.POSITIONS``) or None
        self.gated_position = position_name(gating, position)
        if self.gated_position is not None:
            where = GATE_POSITIONS[self.gated_position]
            channels = {"input": in_channels, "hidden": out_channels, "output": out_channels}
            units = where.units(in_channels, out_channels)
            self.gate = make_gate(gate, channels[where.reads], units, depth=gate_depth, unit=where.unit,
                                  **(gate_options or {}))

    def _gated(self, point: str, t: torch.Tensor, g: torch.Tensor | None,
               record: GateRecord | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """At one point of the forward pass: compute the gate if it reads ``t`` here, and
        scale ``t`` by it (``(B, units)``, broadcast over H and W) if it scales here."""
        if self.gated_position is None:
            return t, g
        where: GatePosition = GATE_POSITIONS[self.gated_position]
        if where.reads == point:
            g = self.gate(t, record)
        if where.scales == point:
            t = t * g[:, :, None, None]
        return t, g

    def forward(self, x: torch.Tensor, record: GateRecord | None = None) -> torch.Tensor:
        """``record``: a :class:`~consensus_tutorial.gates.GateRecord` that a live gate in
        training mode adds its decisions to (None: not recorded)."""
        identity = self.shortcut(x)
        x, g = self._gated("input", x, None, record)
        h, g = self._gated("hidden", F.relu(self.bn1(self.conv1(x))), g, record)
        y, g = self._gated("output", self.bn2(self.conv2(h)), g, record)
        return F.relu(identity + y)


class ResNet(nn.Module):
    """A ResNet of basic blocks: stem conv-BN-ReLU, stages of blocks, average pool, linear.

    Input (B, 3, H, W), output logits (B, num_classes). ``architecture`` holds the
    arguments that rebuild the model (a factory's, such as ``family`` and ``depth``, when a
    factory built it), ``input_shape`` the (3, H, W) it was made for.
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        *,
        shortcut: str,
        input_shape: tuple[int, int, int],
        gating: str | None = None,
        position: str = "b",
        gate: str = "dynamic",
        gate_depth: int = 1,
        gate_options: dict | None = None,
        architecture: dict | None = None,
    ):
        super().__init__()
        check_choice("gating", gating, GATINGS)
        check_choice("position", position, channel_positions())
        check_choice("gate", gate, GATE_KINDS)
        check_choice("gate_depth", gate_depth, (1, 2))
        self.blocks_per_stage, self.widths, self.shortcut_kind = tuple(blocks_per_stage), tuple(widths), shortcut
        self.architecture = dict(architecture) if architecture is not None else dict(
            family="custom", blocks_per_stage=list(blocks_per_stage), widths=list(widths), num_classes=num_classes,
            shortcut=shortcut, gating=gating, position=position, gate=gate, gate_depth=gate_depth,
            **(gate_options or {}))
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.gating, self.position, self.gate_kind = gating, position, gate
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        stages = []
        for stage, (n_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(
                    GatedBasicBlock(
                        in_channels, width, stride, shortcut=shortcut, gating=gating,
                        position=position, gate=gate, gate_depth=gate_depth,
                        gate_options=gate_options,
                    )
                )
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def dense_copy(self) -> "ResNet":
        """A freshly initialised ungated ResNet of the same shape: the network this one
        prunes, whose FLOPs are the dense FLOPs."""
        return ResNet(self.blocks_per_stage, self.widths, self.num_classes, shortcut=self.shortcut_kind,
                      input_shape=self.input_shape)

    def blocks(self) -> list[tuple[str, GatedBasicBlock]]:
        """All residual blocks in order, with their qualified names (e.g. "stages.1.0")."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, GatedBasicBlock)]

    def forward(self, x: torch.Tensor, record: GateRecord | None = None) -> torch.Tensor:
        """Logits (B, num_classes); the live gates' decisions go to ``record`` when given
        (training mode), which is how the one-pass objective reads them."""
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages:
            for block in stage:
                x = block(x, record)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    gating: str | None = None,
    position: str = "b",
    gate: str = "dynamic",
    gate_depth: int = 1,
    **gate_options,
) -> ResNet:
    """CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110, ...), He et al. 2016, option-A shortcuts.

    Three stages of n blocks, widths 16/32/64, for 32x32 inputs.

    Args:
        depth: 6n + 2 with n >= 1.
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.
        gating: None (plain), "layer" (a gate per block) or "channel" (a gate per channel).
        position: where channel gates sit: "a", "b" or "c" (ignored for other gatings).
        gate: "dynamic" (MLP over pooled features) or "static" (one logit per unit).
        gate_depth: K, the number of linear layers in a dynamic gate's MLP (1 or 2).
        **gate_options: passed to the gate modules (``init_prob``, ``momentum``, ``ste_clip``).
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"depth must be 6n+2 with n >= 1, for example one of {CIFAR_DEPTHS_EXAMPLES}; got {depth!r}."
        )
    n = (depth - 2) // 6
    return ResNet(
        (n, n, n), (16, 32, 64), num_classes, shortcut="A", input_shape=(3, 32, 32),
        gating=gating, position=position, gate=gate, gate_depth=gate_depth, gate_options=gate_options,
        architecture=dict(family="cifar", depth=depth, num_classes=num_classes, gating=gating, position=position,
                          gate=gate, gate_depth=gate_depth, **gate_options),
    )


def tiny_resnet18(
    num_classes: int = 200,
    gating: str | None = None,
    position: str = "b",
    gate: str = "dynamic",
    gate_depth: int = 1,
    **gate_options,
) -> ResNet:
    """ResNet-18 for 64x64 Tiny ImageNet: 3x3 stride-1 stem, no max-pool, option-B shortcuts.

    Four stages of two blocks, widths 64/128/256/512. Arguments as in :func:`cifar_resnet`.
    """
    return ResNet(
        (2, 2, 2, 2), (64, 128, 256, 512), num_classes, shortcut="B", input_shape=(3, 64, 64),
        gating=gating, position=position, gate=gate, gate_depth=gate_depth, gate_options=gate_options,
        architecture=dict(family="tiny", depth=18, num_classes=num_classes, gating=gating, position=position,
                          gate=gate, gate_depth=gate_depth, **gate_options),
    )


ARCHS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18")


def build_model(arch: str, num_classes: int, **kwargs) -> ResNet:
    """Build a model by name: "resnet20" ... "resnet110" (CIFAR) or "resnet18" (Tiny ImageNet)."""
    check_choice("arch", arch, ARCHS)
    if arch == "resnet18":
        return tiny_resnet18(num_classes, **kwargs)
    return cifar_resnet(int(arch.removeprefix("resnet")), num_classes, **kwargs)
