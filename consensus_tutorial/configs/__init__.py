"""The full-schedule settings of the paper's experiments, shipped with the package.

Each ``NAME.yaml`` here holds ``TrainConfig`` fields (flag names as keys) and, in its
first lines, the command that runs it. Load one by name or any YAML file by path::

    from consensus_tutorial.configs import load_settings, names
    names()                                   # ['cifar10-resnet56-channel', ...]
    settings = load_settings("cifar10-resnet56-channel")
    config = TrainConfig.from_dict(settings)

On the command line: ``python -m consensus_tutorial train --config cifar10-resnet56-channel``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    """The names of the shipped settings."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def load_settings(name_or_path: str | os.PathLike) -> dict:
    """The settings (a dict) of a shipped file by name, or of a YAML file by path."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in names():
        path = FOLDER / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; give a YAML file or one of the shipped "
                                f"settings: {', '.join(names())}.")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of settings (name: value), not a {type(loaded).__name__}.")
    return loaded
