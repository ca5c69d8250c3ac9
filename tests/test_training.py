"""The training engine and the command line, on small generated data sets (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import consensus_tutorial as ct
from consensus_tutorial.__main__ import main
from consensus_tutorial.training import TrainConfig, default_data_root, run
from fakedata import make_cifar


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A miniature official CIFAR-10 layout: 5 x 24 train and 40 test images."""
    root = tmp_path_factory.mktemp("data")
    make_cifar(root, "cifar10", n_per_file=24, n_test=40)
    return root


def small_config(root, **overrides) -> TrainConfig:
    values = dict(dataset="cifar10", data_root=str(root), arch="resnet20", epochs=2, batch_size=32,
                  verify_checksums=False, seed=3, device="cpu", threads=None)
    values.update(overrides)
    return TrainConfig(**values)


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(epoch, record):
    if epoch == 1:
        raise Interrupt


def _strip_times(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in history]


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_run_writes_the_files_and_metrics(cifar_root, tmp_path):
    out = tmp_path / "run"
    metrics = run(small_config(cifar_root), out, progress=False)
    for name in ("metrics.json", "history.json", "checkpoint.pt", "subnetwork.pt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("flops_dense", "flops_extracted", "params_dense", "params_extracted", "top1_gated",
                "top1_extracted", "pruning_rate_flops", "epochs", "wall_time_s", "command", "version", "method"):
        assert key in saved, key
    assert saved["flops_dense"] == 40_551_040
    assert saved["pruning_rate_flops"] == pytest.approx(1 - saved["flops_extracted"] / saved["flops_dense"], abs=1e-4)
    subnet = ct.load_subnetwork(out / "subnetwork.pt")
    assert ct.gate_modules(subnet) == {}
    assert ct.count_flops(subnet) == saved["flops_extracted"] == metrics["flops_extracted"]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("train_loss", "ce", "sparsity", "polarization", "top1_gated", "disagreement",
                "mean_firing_rate", "flops_masked"):
        assert key in history[-1], key
    assert len(history[-1]["firing_rates"]) == 9  # one gate per block of ResNet-20


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_killed_run_resumes_to_the_same_result(cifar_root, tmp_path):
    config = small_config(cifar_root, gate="static", gate_lr=0.05, lambda_sp=20.0)
    unbroken = run(config, tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        run(config, tmp_path / "b", progress=False, on_epoch_end=_stop_after_first_epoch)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    resumed = run(config, tmp_path / "b", resume=True, progress=False)
    h_a = json.loads((tmp_path / "a" / "history.json").read_text())
    h_b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert "handover_step" in h_a[0]  # the killed run's checkpoint holds the extracted network
    assert _strip_times(h_a) == _strip_times(h_b)
    for key in ("top1_gated", "top1_extracted", "flops_extracted", "params_extracted"):
        assert unbroken[key] == resumed[key], key
    a = ct.load_subnetwork(tmp_path / "a" / "subnetwork.pt").state_dict()
    b = ct.load_subnetwork(tmp_path / "b" / "subnetwork.pt").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_resume_refuses_other_settings(cifar_root, tmp_path):
    with pytest.raises(Interrupt):
        run(small_config(cifar_root), tmp_path, progress=False, on_epoch_end=_stop_after_first_epoch)
    with pytest.raises(ValueError, match="target_rate"):
        run(small_config(cifar_root, target_rate=0.3), tmp_path, resume=True, progress=False)


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_gates_close_toward_the_target(cifar_root):
    """Static gates with their own Adam and a strong sparsity weight must close units."""
    config = small_config(cifar_root, gate="static", gate_lr=0.3, lambda_sp=50.0, epochs=3, batch_size=16,
                          target_rate=0.5)
    metrics = run(config, None, progress=False)
    assert metrics["pruning_rate_flops"] > 0.2
    assert metrics["flops_extracted"] < metrics["flops_dense"]


@pytest.mark.filterwarnings("ignore:.*checksums")
@pytest.mark.parametrize("method", ["dense", "dropout", "random", "l1", "bn-polarization"])
def test_baselines_end_as_measured_networks(cifar_root, method):
    metrics = run(small_config(cifar_root, method=method, target_rate=0.4, epochs=2), None, progress=False)
    assert metrics["method"] == method
    if method in ("dense", "dropout"):
        assert metrics["flops_extracted"] == metrics["flops_dense"]
        assert metrics["params_extracted"] == metrics["params_dense"]
    else:
        # the mask is chosen to fit the FLOPs budget: at most 60% kept, and not far below it
        assert 0.35 <= metrics["pruning_rate_flops"] <= 0.5
        assert metrics["params_extracted"] < metrics["params_dense"]


def test_masks_for_flops_meets_the_budget():
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    from consensus_tutorial.baselines import l1_scores, masks_for_flops

    dense = ct.predicted_flops(model, {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model).items()})
    for uniform in (True, False):
        masks = masks_for_flops(model, l1_scores(model), 0.5, uniform=uniform)
        kept = ct.predicted_flops(model, masks)
        assert 0.45 * dense <= kept <= 0.5 * dense


@pytest.mark.parametrize("uniform", [True, False])
def test_budget_cut_rounds_widths_and_still_meets_the_budget(uniform):
    """With ``round_to``, every channel gate keeps a multiple of it (or all its channels)
    and the masks stay within the FLOPs budget, where rounding the unrounded cut's widths
    up afterwards (what ``consensus_masks(round_to=...)`` does) goes over it."""
    from consensus_tutorial.baselines import l1_scores, masks_for_flops
    from consensus_tutorial.consensus import round_up_kept

    torch.manual_seed(0)
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    gates = ct.gate_modules(model)
    dense = ct.predicted_flops(model, {n: torch.ones(g.units, dtype=torch.bool) for n, g in gates.items()})
    scores = l1_scores(model)
    masks = masks_for_flops(model, scores, 0.45, uniform=uniform, round_to=8)
    assert all(int(m.sum()) % 8 == 0 or int(m.sum()) == gates[n].units for n, m in masks.items())
    assert ct.predicted_flops(model, masks) <= 0.55 * dense
    plain = masks_for_flops(model, scores, 0.45, uniform=uniform)
    assert any(int(m.sum()) % 8 for m in plain.values())  # the unrounded cut has other widths
    order = {n: torch.argsort(scores[n], descending=True, stable=True) for n in plain}
    rounded_up = {n: torch.zeros_like(m).index_fill_(0, order[n][:round_up_kept(int(m.sum()), gates[n], 8)], True)
                  for n, m in plain.items()}
    assert ct.predicted_flops(model, rounded_up) > 0.55 * dense


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_run_with_round_to_keeps_rounded_widths_within_the_budget(cifar_root):
    config = small_config(cifar_root, round_to=4, target_rate=0.5, epochs=2, settle_deadline=0.2)
    metrics = run(config, None, progress=False)
    assert metrics["pruning_rate_flops"] >= 0.5 - 1e-9
    widths = metrics["kept_units"].values()
    assert all(k % 4 == 0 for k in widths), widths


def test_flops_target_out_of_reach_is_explained():
    model = ct.cifar_resnet(20, gating="channel", position="a")
    from consensus_tutorial.objective import keep_target

    with pytest.raises(ValueError, match="cannot be reached"):
        keep_target(model, 0.9, flops_aware=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="mnist"), "dataset must be one of"),
        (dict(target_rate=1.5), r"target_rate must lie in \[0, 1\)"),
        (dict(arch="resnet21"), "arch must be one of"),
        (dict(arch="resnet18"), "does not fit dataset"),
        (dict(polarizer="zhuang"), "needs zhuang_t"),
        (dict(epochs=0), "epochs must be a positive integer"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).validate()


def test_unknown_config_key_lists_known_ones():
    with pytest.raises(ValueError, match="unknown setting.*lerning_rate.*known settings"):
        TrainConfig.from_dict({"lerning_rate": 0.1})


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CONSENSUS_TUTORIAL_DATA", str(tmp_path / "env"))
    assert default_data_root(tmp_path / "given") == tmp_path / "given"
    assert default_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("CONSENSUS_TUTORIAL_DATA")
    assert default_data_root(None).name == "data"


# ----------------------------------------------------------------------------- command line


def test_cli_rejects_unknown_dataset(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "mnist", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mnist'" in capsys.readouterr().err


def test_cli_rejects_target_rate_above_one(tmp_path, capsys):
    assert main(["train", "--target-rate", "1.5", "--out", str(tmp_path)]) == 2
    assert "target_rate must lie in [0, 1)" in capsys.readouterr().err


def test_cli_missing_root_says_where(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--data-root", str(missing), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "download" in message and "Traceback" not in message


@pytest.mark.filterwarnings("ignore:.*checksums")
def test_cli_config_file_flags_override_and_evaluate_reproduces(cifar_root, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"dataset": "cifar10", "data-root": str(cifar_root), "epochs": 3,
                                      "batch-size": 32, "verify-checksums": False, "gate": "static",
                                      "target_rate": 0.3}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1  # the flag wins over the file
    assert metrics["config"]["gate"] == "static" and metrics["config"]["target_rate"] == 0.3
    assert metrics["command"].startswith("python -m consensus_tutorial train --config")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-root", str(cifar_root), "--no-verify-checksums"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1_extracted"] == metrics["top1_extracted"]
    assert evaluated["flops_extracted"] == metrics["flops_extracted"]
    assert evaluated["test_images"] == 40


def test_yaml_numbers_written_without_a_dot_are_numbers():
    config = TrainConfig.from_dict(yaml.safe_load("weight_decay: 5e-4\nlr: 1e-1\nepochs: '3'\namp: 'false'"))
    assert config.weight_decay == 5e-4 and config.lr == 0.1 and config.epochs == 3 and config.amp is False
    with pytest.raises(ValueError, match="setting epochs must be of type int"):
        TrainConfig.from_dict({"epochs": "many"})


def test_every_train_option_has_help_and_its_default():
    import dataclasses

    from consensus_tutorial.__main__ import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        default = "none" if f.default is None else f.default
        assert helps[f.name] and helps[f.name].endswith(f"(default: {default})"), f.name
