"""The YAML files in consensus_tutorial/configs/: each is a valid TrainConfig, pairs the right data set with
the right network, and goes through the command line's --config (nothing is trained)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from consensus_tutorial.__main__ import build_parser, config_from_args
from consensus_tutorial.training import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "consensus_tutorial" / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))
EXPECTED = {  # file-name prefix: (dataset, arch)
    "cifar10-resnet56-": ("cifar10", "resnet56"),
    "cifar100-resnet56-": ("cifar100", "resnet56"),
    "tiny-imagenet-resnet18-": ("tiny-imagenet", "resnet18"),
}


def _load(path: Path) -> dict:
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict), f"{path.name} must hold a mapping"
    return values


def _expected(path: Path) -> tuple[str, str, str]:
    for prefix, (dataset, arch) in EXPECTED.items():
        if path.stem.startswith(prefix):
            return dataset, arch, path.stem.removeprefix(prefix)
    raise AssertionError(f"{path.name}: name should start with one of {sorted(EXPECTED)}")


def test_the_six_experiment_files_exist():
    names = {p.name for p in FILES}
    for prefix in EXPECTED:
        for gating in ("channel", "layer"):
            assert f"{prefix}{gating}.yaml" in names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_config_loads_and_validates(path):
    values = _load(path)
    config = TrainConfig.from_dict(values).validate()
    dataset, arch, gating = _expected(path)
    assert (config.dataset, config.arch) == (dataset, arch)
    assert config.method == "consensus"
    assert config.gating == gating
    if gating == "channel":
        assert config.position == "b"
    assert config.target_rate == 0.5
    # YAML typing: numbers must arrive as numbers, not strings (e.g. "5e-4" is a string in YAML 1.1)
    for name in ("lr", "weight_decay", "momentum", "target_rate"):
        assert isinstance(getattr(config, name), float), name
    for name in ("epochs", "batch_size"):
        assert isinstance(getattr(config, name), int), name
    # full schedule on full data: no subsets, no machine-specific settings
    assert config.limit_train is None and config.limit_test is None
    for key in ("data_root", "device", "threads", "download"):
        assert key not in values, key


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_header_gives_the_command_that_runs_it(path):
    text = path.read_text()
    assert text.startswith("#")
    command = re.search(r"python -m consensus_tutorial train (.+)", text)
    assert command is not None, "the header should hold the command"
    assert f"--config {path.stem}" in command.group(1)
    assert f"--out runs/{path.stem}" in command.group(1)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_cli_accepts_the_file(path, tmp_path):
    parser = build_parser()
    args = parser.parse_args(["train", "--config", str(path), "--data-root", str(tmp_path),
                              "--out", str(tmp_path / "run")])
    config = config_from_args(args)
    assert config == TrainConfig.from_dict(_load(path) | {"data_root": str(tmp_path)}).validate()
    # a flag overrides the file
    args = parser.parse_args(["train", "--config", str(path), "--epochs", "1", "--out", str(tmp_path / "run")])
    assert config_from_args(args).epochs == 1


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_target_rate_is_reachable(path):
    """The FLOPs target must lie within the share of FLOPs behind the gates (else the
    run would fail at its first step)."""
    from consensus_tutorial.objective import keep_target
    from consensus_tutorial.training import build_for

    config = TrainConfig.from_dict(_load(path)).validate()
    kappa, _ = keep_target(build_for(config), config.target_rate, config.flops_aware)
    assert 0.0 < kappa < 1.0


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_cli_accepts_the_shipped_name(path, tmp_path):
    args = build_parser().parse_args(["train", "--config", path.stem, "--out", str(tmp_path / "run")])
    assert config_from_args(args).to_dict() == TrainConfig.from_dict(_load(path)).validate().to_dict()
