"""A careless or hostile user: every mistake gets one clear line (exit code 2, no
traceback), nothing already written is lost, and no file can make the package run code."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import consensus_tutorial as ct
from consensus_tutorial.__main__ import main
from consensus_tutorial.data import DataError, load_dataset
from fakedata import make_cifar, make_pack

pytestmark = pytest.mark.filterwarnings("ignore:.*checksums")
CLASSES = [f"c{i}" for i in range(10)]


class Payload:
    """A pickle that, if unpickled, creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data roots (good, damaged, hostile) and one finished run to protect."""
    base = tmp_path_factory.mktemp("world")
    good = base / "good"
    make_cifar(good, "cifar10", n_per_file=24, n_test=40)
    run = base / "run"
    assert main(["train", "--data-root", str(good), "--epochs", "1", "--batch-size", "32", "--no-verify-checksums",
                 "--gate", "static", "--out", str(run), "--quiet"]) == 0
    corrupt = base / "corrupt"
    corrupt.mkdir()
    (corrupt / "train_jpeg.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (corrupt / "test_jpeg.npz").write_bytes(b"")
    empty = base / "empty"
    empty.mkdir()
    (empty / "train_jpeg.npz").write_bytes(b"")
    badjpeg = base / "badjpeg"
    for split in ("train", "test"):
        make_pack(badjpeg / f"{split}_jpeg.npz", np.arange(40) % 10, CLASSES)
    with np.load(badjpeg / "train_jpeg.npz") as a:
        jpeg = a["jpeg"].copy()
        offsets = a["offsets"]
    jpeg[offsets[3]:offsets[4]] = 0  # image 3 is no longer a JPEG
    np.savez(badjpeg / "train_jpeg.npz", jpeg=jpeg, offsets=offsets, y=np.arange(40) % 10, classes=np.asarray(CLASSES))
    badlabel = base / "badlabel"
    for split in ("train", "test"):
        make_pack(badlabel / f"{split}_jpeg.npz", np.r_[np.arange(39) % 10, 10], CLASSES)
    yaml_bad = base / "bad.yaml"
    yaml_bad.write_text("epochs: [1, 2\n")
    yaml_bool = base / "bool.yaml"
    yaml_bool.write_text(yaml.safe_dump({"limit_train": True}))
    afile = base / "afile"
    afile.write_text("not a folder")
    return {"base": base, "good": good, "run": run, "corrupt": corrupt, "empty": empty, "badjpeg": badjpeg,
            "badlabel": badlabel, "yaml_bad": yaml_bad, "yaml_bool": yaml_bool, "afile": afile}


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _damaged_copy(world, name: str, file: str, content: bytes) -> Path:
    copy = world["base"] / name
    if not copy.exists():
        shutil.copytree(world["run"], copy)
        (copy / file).write_bytes(content)
    return copy


TRAIN = ["train", "--epochs", "1", "--batch-size", "32", "--quiet", "--no-verify-checksums"]
CASES = {
    # name: (argv built from the world, words the message must contain)
    "existing run": (lambda w: [*TRAIN, "--data-root", str(w["good"]), "--out", str(w["run"])],
                     ["already holds a run", "--resume", "--overwrite"]),
    "threshold": (lambda w: [*TRAIN, "--threshold", "2", "--out", str(w["run"])], ["threshold"]),
    "min channels": (lambda w: [*TRAIN, "--min-channels", "-1", "--out", str(w["run"])], ["min_channels"]),
    "round to": (lambda w: [*TRAIN, "--round-to", "0", "--out", str(w["run"])], ["round_to"]),
    "limit below batch": (lambda w: [*TRAIN, "--limit-train", "16", "--out", str(w["run"])],
                          ["limit_train", "batch_size"]),
    "gate momentum": (lambda w: [*TRAIN, "--gate-momentum", "1.5", "--out", str(w["run"])], ["gate_momentum"]),
    "init prob": (lambda w: [*TRAIN, "--init-prob", "1.0", "--out", str(w["run"])], ["init_prob"]),
    "seed": (lambda w: [*TRAIN, "--seed", "-1", "--out", str(w["run"])], ["seed"]),
    "threads": (lambda w: [*TRAIN, "--threads", "-1", "--out", str(w["run"])], ["threads"]),
    "out is a file": (lambda w: [*TRAIN, "--data-root", str(w["good"]), "--out", str(w["afile"])], ["is a file"]),
    "malformed yaml": (lambda w: [*TRAIN, "--config", str(w["yaml_bad"]), "--out", str(w["run"])],
                       ["bad.yaml", "YAML"]),
    "yaml true as a number": (lambda w: [*TRAIN, "--config", str(w["yaml_bool"]), "--out", str(w["run"])],
                              ["limit_train"]),
    "corrupt pack": (lambda w: [*TRAIN, "--data-root", str(w["corrupt"]), "--out", str(w["base"] / "o1")],
                     ["train_jpeg.npz"]),
    "empty pack": (lambda w: [*TRAIN, "--data-root", str(w["empty"]), "--out", str(w["base"] / "o4")],
                   ["train_jpeg.npz", "not a readable JPEG pack"]),
    "bad jpeg in a pack": (lambda w: [*TRAIN, "--data-root", str(w["badjpeg"]), "--out", str(w["base"] / "o2")],
                           ["train_jpeg.npz", "image 3"]),
    "label out of range": (lambda w: [*TRAIN, "--data-root", str(w["badlabel"]), "--out", str(w["base"] / "o3")],
                           ["labels", "[0, 10)"]),
    "checksums differ": (lambda w: ["evaluate", str(w["run"]), "--data-root", str(w["good"])], ["md5", "data_batch_1"]),
    "truncated checkpoint": (lambda w: [*TRAIN, "--resume", "--data-root", str(w["good"]), "--gate", "static",
                                        "--out", str(_damaged_copy(w, "trunc_ckpt", "checkpoint.pt", b"PK\x03"))],
                             ["checkpoint.pt", "not a valid checkpoint"]),
    "truncated subnetwork": (lambda w: ["evaluate", str(_damaged_copy(w, "trunc_sub", "subnetwork.pt", b"\x80\x02")),
                                        "--data-root", str(w["good"]), "--no-verify-checksums"],
                             ["subnetwork.pt", "not a valid sub-network"]),
    "malformed metrics": (lambda w: ["evaluate", str(_damaged_copy(w, "bad_metrics", "metrics.json", b"{oops")),
                                     "--data-root", str(w["good"])], ["metrics.json", "JSON"]),
}
if not torch.cuda.is_available():
    CASES["no gpu"] = (lambda w: [*TRAIN, "--device", "cuda", "--out", str(w["run"])], ["cuda", "--device cpu"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_mistake_is_one_clear_line_and_loses_nothing(world, case, capsys):
    argv_of, words = CASES[case]
    before = _snapshot(world["run"])
    code = main(argv_of(world))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert _snapshot(world["run"]) == before


def test_debug_shows_the_traceback(world):
    with pytest.raises(ValueError, match="threshold"):
        main(["--debug", "train", "--threshold", "2", "--out", str(world["run"])])


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(epoch, record):
    if epoch == 1:
        raise Interrupt


def test_resume_cleans_killed_writes_and_counts_all_time_and_overwrite_replaces(world, tmp_path):
    from consensus_tutorial.training import TrainConfig, run

    config = TrainConfig(data_root=str(world["good"]), epochs=2, batch_size=32, verify_checksums=False,
                         gate="static", device="cpu")
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        run(config, out, progress=False, on_epoch_end=_stop_after_first_epoch)
    first_wall = torch.load(out / "checkpoint.pt", weights_only=True)["wall"]
    (out / ".checkpoint.pt.killed.tmp").write_bytes(b"half a checkpoint")  # a killed write
    metrics = run(config, out, resume=True, progress=False)
    assert not list(out.glob(".*.tmp"))
    assert metrics["epochs"] == 2 and metrics["machine"]["torch"] == torch.__version__
    assert metrics["wall_time_s"] > first_wall  # the killed process's time is counted too
    assert main([*TRAIN, "--data-root", str(world["good"]), "--overwrite", "--out", str(out)]) == 0
    assert yaml.safe_load((out / "metrics.json").read_text())["epochs"] == 1


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch, capsys):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(CIFAR10, "download", offline)
    assert main([*TRAIN, "--data-root", str(tmp_path / "empty"), "--download", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "could not download cifar10" in err and "no network" in err


def _hostile_cifar(root: Path, marker: Path) -> None:
    make_cifar(root, "cifar10", n_per_file=4, n_test=4)
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": Payload(marker)}, f, protocol=2)


def test_a_hostile_cifar_batch_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    _hostile_cifar(tmp_path / "data", marker)
    with pytest.raises(DataError, match="data_batch_1.*refused to load posix.system"):
        load_dataset("cifar10", tmp_path / "data", "train", verify_checksums=False)
    assert not marker.exists()


def test_a_run_folder_cannot_choose_where_data_is_read_or_switch_checks_off(world, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    _hostile_cifar(tmp_path / "hostile", marker)
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    metrics = yaml.safe_load((run / "metrics.json").read_text())
    metrics["config"].update(data_root=str(tmp_path / "hostile"), verify_checksums=False)
    (run / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setenv("CONSENSUS_TUTORIAL_DATA", str(world["good"]))
    assert main(["evaluate", str(run)]) == 2  # the user's root, checked: the fake files fail md5
    assert "md5" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--no-verify-checksums"]) == 0  # the user's choice, the user's root
    assert not marker.exists()


def test_a_hostile_pt_file_is_refused_without_torchs_advice(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "subnetwork.pt"
    torch.save({"spec": Payload(marker), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a valid sub-network") as err:
        ct.load_subnetwork(path)
    assert "weights_only=False" not in str(err.value) and "never loads pickled code" in str(err.value)
    assert not marker.exists()
