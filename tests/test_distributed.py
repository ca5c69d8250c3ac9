"""Several processes under torchrun (CPU, gloo, two processes, tiny data): one run folder,
one consensus mask, the loss of the shards, and a killed run that resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import consensus_tutorial as ct
from consensus_tutorial.data import BatchLoader, load_dataset
from consensus_tutorial.training import TrainConfig, build_for
from fakedata import make_cifar

pytestmark = [pytest.mark.filterwarnings("ignore:.*checksums"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find a rank")]
ROOT = Path(__file__).resolve().parents[1]
# gloo picks the network interface from the host name, which a sandboxed machine may not
# resolve: the processes of these tests talk over the loopback interface
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
TRAIN = ["--no-verify-checksums", "--batch-size", "32", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_cifar(root, "cifar10", n_per_file=64, n_test=40)
    return root


def _torchrun(args: list[str], **popen) -> list[str] | subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "consensus_tutorial", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, **popen)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_two_process_run_writes_one_folder_with_one_mask(data, tmp_path):
    out = tmp_path / "run"
    stdout = _torchrun(["--data-root", str(data), "--epochs", "2", "--out", str(out), *TRAIN])
    assert stdout.count('"top1_extracted"') == 1  # one process prints the result
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json", "metrics.json", "subnetwork.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["processes"] == 2 and len(history) == 2
    assert [h["mask_agreement"] for h in history] == [1.0, 1.0]  # every unit decided alike on both ranks
    assert metrics["settle"]["step"] is not None
    ct.load_subnetwork(out / "subnetwork.pt")


def _two_ranks_gate(rank: int, rendezvous: str, out: str, sync: bool) -> None:
    """Each rank feeds one gate data that closes other units; write the consensus mask."""
    import torch.distributed as dist

    from consensus_tutorial.training import distributed

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    gate = ct.DynamicGate(4, 4, momentum=0.0).train()
    with torch.no_grad():
        gate.mlp[0].weight.copy_(torch.eye(4) * 10.0)
        gate.mlp[0].bias.fill_(-5.0)
    x = torch.zeros(8, 4, 2, 2)
    x[:, [0, 1] if rank == 0 else [2, 3]] = 1.0  # rank 0 opens units 0, 1; rank 1 opens 2, 3
    x[:4, :] = 1.0  # and half of each shard opens every unit
    gate(x)
    if sync:
        distributed.average_buffers([gate.firing_rate])
    torch.save({"rate": gate.firing_rate.clone()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("sync", [True, False], ids=["reduced", "naive"])
def test_two_ranks_fed_different_data_share_one_mask_from_both_shards(tmp_path, sync):
    torch.multiprocessing.spawn(_two_ranks_gate, args=(f"file://{tmp_path}/rdv", str(tmp_path), sync), nprocs=2)
    rates = [torch.load(tmp_path / f"rank{r}.pt")["rate"] for r in (0, 1)]
    # rank 0 sees units 0, 1 fire on all 8 images, units 2, 3 on 4 of 8; rank 1 the reverse
    if sync:
        torch.testing.assert_close(rates[0], rates[1])
        torch.testing.assert_close(rates[0], torch.full((4,), 0.75))  # the rate of both shards together
    else:  # the naive setup: each rank keeps its own statistics, and the masks would differ
        assert not torch.equal(rates[0], rates[1])


def test_dense_two_process_loss_is_the_mean_loss_of_the_two_shards(data, tmp_path):
    """BatchNorm normalises each process's shard with that shard's statistics, so a
    two-process step is not the one-process step on the whole batch: it is the mean of the
    one-process losses of the two halves of the global batch. (PyTorch's SyncBatchNorm,
    ``--sync-bn``, would normalise over the global batch, on CUDA only.)"""
    out = tmp_path / "dense"
    _torchrun(["--data-root", str(data), "--method", "dense", "--epochs", "1", "--limit-train", "32",
               "--limit-test", "20", "--out", str(out), *TRAIN])
    logged = json.loads((out / "history.json").read_text())[0]["train_loss"]
    config = TrainConfig(method="dense", epochs=1, batch_size=32, limit_train=32, limit_test=20, amp=False,
                         data_root=str(data), verify_checksums=False).validate()
    torch.manual_seed(config.seed)
    train = load_dataset("cifar10", data, "train", limit=32, seed=config.seed, verify_checksums=False)
    torch.manual_seed(config.seed)
    model = build_for(config).train()
    x, y = next(iter(BatchLoader(train, 32, train=True, seed=config.seed)))
    halves = [F.cross_entropy(model(x[s]), y[s]).item() for s in (slice(0, 16), slice(16, 32))]
    assert logged == pytest.approx(sum(halves) / 2, rel=1e-5)
    whole = F.cross_entropy(model(x), y).item()
    assert abs(whole - logged) > 1e-6  # the whole batch's BN statistics give another number


def _workers(parent: int) -> list[int]:
    """The worker processes torchrun started (children of its process)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return sorted(children)


def test_a_killed_rank_resumes_to_the_unbroken_result(data, tmp_path):
    args = ["--data-root", str(data), "--epochs", "4", "--gate", "static", *TRAIN]
    _torchrun([*args, "--out", str(tmp_path / "unbroken")])
    broken = tmp_path / "broken"
    launcher = _torchrun([*args, "--out", str(broken)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (broken / "checkpoint.pt").is_file() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _workers(launcher.pid)
    if workers:
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun stops the other
    launcher.wait(timeout=300)
    killed_at = torch.load(broken / "checkpoint.pt", weights_only=False)["epoch"]
    print(f"killed after epoch {killed_at}, torchrun exit {launcher.returncode}")
    _torchrun([*args, "--out", str(broken), "--resume"])
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("unbroken", "broken"))
    assert killed_at < 4 and launcher.returncode != 0  # killed mid-run, not after it ended
    assert (a["top1_extracted"], a["kept_units"]) == (b["top1_extracted"], b["kept_units"])
    sa, sb = (torch.load(tmp_path / d / "subnetwork.pt")["state_dict"] for d in ("unbroken", "broken"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    history = json.loads((broken / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_a_checkpoint_resumes_only_on_as_many_processes(data, tmp_path):
    out = tmp_path / "run"
    _torchrun(["--data-root", str(data), "--epochs", "1", "--gate", "static", "--out", str(out), *TRAIN])
    done = subprocess.run([sys.executable, "-m", "consensus_tutorial", "train", "--data-root", str(data), "--epochs",
                           "1", "--gate", "static", "--out", str(out), "--resume", *TRAIN],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "torchrun --nproc_per_node=2" in done.stderr
