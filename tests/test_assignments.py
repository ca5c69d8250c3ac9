"""Course assignments (consensus_tutorial.assignments and assignments/solutions/).

* every check passes a correct answer and catches the typical wrong ones, with a message
  that says what was expected, what came back, and a hint;
* the release step cuts the solution blocks out (and nothing else);
* the batch grader, run once on a folder of solved, unsolved, partly solved, foreign and
  broken notebooks, scores each correctly without crashing: the solution notebooks pass
  every check, the generated student notebooks fail every check.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, data_environment
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import consensus_tutorial as ct
from consensus_tutorial.assignments import (
    ASSIGNMENTS,
    RESULTS_ENV,
    AssignmentCheckError,
    CheckResult,
    ToyBlock,
    check_binarize,
    check_binarize_clipped,
    check_extraction,
    check_latency_study,
    check_polarizer,
    check_sparsity_penalty,
    check_study,
    check_study_choice,
    check_study_plot,
    check_study_results,
    check_toy_polarization,
    grade,
    release,
    strip_solutions,
)
from consensus_tutorial.assignments.__main__ import main
from consensus_tutorial.assignments.grading import (
    LINE,
    find_assignment,
    parse_parameter,
    read_results_file,
    results_from_outputs,
)
from consensus_tutorial.assignments.registry import all_checks
from consensus_tutorial.assignments.release import (
    CODE_STUB,
    MARKDOWN_STUB,
    ReleaseError,
)

SOLUTIONS = ROOT / "assignments" / "solutions"
# Small enough for a busy 2-core CPU; the notebooks' own defaults are the graded set.
TINY = {
    "DOWNLOAD": False, "LIMIT_TRAIN": 64, "LIMIT_TEST": 32, "EPOCHS": 2, "BATCH_SIZE": 8, "GATE_LR": 0.5,
    "REPEATS": 3, "LATENCY_BATCH": 4,
}
DATA_NOTEBOOKS = {"a4", "a5"}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fails(check, *args, contains: str = "", **kwargs) -> AssignmentCheckError:
    with pytest.raises(AssignmentCheckError) as info:
        check(*args, **kwargs)
    error = info.value
    assert isinstance(error, AssertionError)
    text = str(error)
    assert "expected:" in text and "got:" in text and "hint:" in text, text
    assert contains.lower() in text.lower(), f"{contains!r} not in:\n{text}"
    return error


# ----------------------------------------------------------------------------- reference answers


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p):
        return (p >= 0.5).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class _SigmoidSTE(torch.autograd.Function):  # wrong: multiplies by sigma'
    @staticmethod
    def forward(ctx, p):
        ctx.save_for_backward(p)
        return (p >= 0.5).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (p,) = ctx.saved_tensors
        return grad_output * p * (1 - p)


class _ZeroSTE(torch.autograd.Function):  # wrong: the true (zero) gradient of the step
    @staticmethod
    def forward(ctx, p):
        return (p >= 0.5).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return torch.zeros_like(grad_output)


class _OpenOnlySTE(torch.autograd.Function):  # wrong: no gradient for closed gates
    @staticmethod
    def forward(ctx, p):
        g = (p >= 0.5).to(p.dtype)
        ctx.save_for_backward(g)
        return g

    @staticmethod
    def backward(ctx, grad_output):
        (g,) = ctx.saved_tensors
        return grad_output * g


class _ClipOnP(torch.autograd.Function):  # wrong: compares p, not its logit, with the clip
    @staticmethod
    def forward(ctx, p, clip):
        ctx.save_for_backward(p)
        ctx.clip = clip
        return (p >= 0.5).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (p,) = ctx.saved_tensors
        return grad_output * (p.abs() <= ctx.clip).to(grad_output.dtype), None


class _Mid(ToyBlock):
    def __init__(self, channels, hidden):
        super().__init__(channels, hidden)
        self.gate = ct.StaticGate(hidden)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = h * self.gate(h)[:, :, None, None]
        return F.relu(x + self.bn2(self.conv2(h)))


class _Out(ToyBlock):
    def __init__(self, channels, hidden):
        super().__init__(channels, hidden)
        self.gate = ct.StaticGate(channels)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(x + y * self.gate(y)[:, :, None, None])


class _UngatedMid(_Mid):  # wrong: has a gate but never multiplies by it
    def forward(self, x):
        return ToyBlock.forward(self, x)


def _copy_bn(target, source, index):
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[index])


@torch.no_grad()
def _extract_mid(block, mask, keep=None):
    keep = mask.bool().nonzero().flatten() if keep is None else keep
    small = ToyBlock(block.channels, len(keep))
    small.conv1.weight.copy_(block.conv1.weight[keep])
    _copy_bn(small.bn1, block.bn1, keep)
    small.conv2.weight.copy_(block.conv2.weight[:, keep])
    _copy_bn(small.bn2, block.bn2, slice(None))
    return small


class _PrunedOut(nn.Module):
    def __init__(self, block, keep, scatter=True):
        super().__init__()
        self.conv1, self.bn1 = copy.deepcopy(block.conv1), copy.deepcopy(block.bn1)
        self.conv2 = nn.Conv2d(block.hidden, len(keep), 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(len(keep))
        with torch.no_grad():
            self.conv2.weight.copy_(block.conv2.weight[keep])
            _copy_bn(self.bn2, block.bn2, keep)
        self.register_buffer("keep", keep)
        self.scatter = scatter

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.scatter:
            return F.relu(x.index_add(1, self.keep, y))
        return F.relu(x[:, : len(self.keep)] + y)  # wrong: adds at the first channels


def _extract_out(block, mask, scatter=True):
    return _PrunedOut(block, mask.bool().nonzero().flatten(), scatter)


# ----------------------------------------------------------------------------- correct answers pass


def test_correct_answers_pass(tmp_path, capsys):
    results = [
        check_binarize(_STE.apply),
        check_binarize(lambda p: p + ((p >= 0.5).to(p.dtype) - p).detach()),  # the one-line STE
        check_binarize(ct.binarize),
        check_binarize_clipped(lambda p, clip: ct.binarize(p, clip=clip)),
        check_polarizer(ct.polarization),
        check_sparsity_penalty(ct.sparsity_penalty),
        check_toy_polarization(torch.linspace(0.3, 0.7, 40), (torch.arange(40) % 2).float() * 0.98 + 0.01, 0.5),
        check_extraction(_Mid, _extract_mid, position="mid"),
        check_extraction(_Out, _extract_out, position="out"),
    ]
    assert all(isinstance(r, CheckResult) and r.passed and bool(r) for r in results)
    out = capsys.readouterr().out
    assert out.count(": PASS") == len(results)
    assert all(LINE.match(line) for line in out.splitlines())


def test_study_checks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = 40_551_040
    results = [
        {"target_rate": 0.4, "flops": 24_000_000, "top1": 30.0},
        {"target_rate": 0.5, "flops": 20_500_000, "top1": 31.0},  # just over a 50% budget
        {"target_rate": 0.6, "flops": 16_000_000, "top1": 28.0},
        {"target_rate": 0.7, "flops": 12_000_000, "top1": 27.0},
    ]
    budget = 0.5 * dense
    plot = tmp_path / "study.png"
    fig, ax = plt.subplots()
    ax.plot([r["flops"] for r in results], [r["top1"] for r in results], "o")
    fig.savefig(plot)
    plt.close(fig)
    assert all(check_study(results, results[2], dense_flops=dense, budget_flops=budget, plot=plot))

    # the most accurate run overall is over the budget
    _fails(check_study_choice, results, results[1], budget, contains="most accurate run overall")
    # the target rate taken for the FLOPs reduction
    _fails(check_study_choice, results, results[0], budget, contains="extracted FLOPs are what you got")
    # within budget but not the best
    _fails(check_study_choice, results, results[3], budget, contains="more accurate run also fits")
    _fails(check_study_choice, results, {"target_rate": 0.55, "flops": 1.0, "top1": 99.0}, budget, contains="one of the runs")
    over = [dict(r, flops=dense) for r in results]
    _fails(check_study_choice, over, over[0], budget, contains="no run fits")
    # the gated (dense) FLOPs reported for every run
    _fails(check_study_results, over, dense, contains="flops_extracted")
    _fails(check_study_results, results[:2], dense, contains="three target rates")
    _fails(check_study_results, [dict(r, flops=r["flops"] / 1e6 * 1e9) for r in results], dense, contains="impossible")
    _fails(check_study_results, [dict(r, top1=r["top1"] / 100) for r in results], dense, contains="fraction")
    _fails(check_study_results, [{"target_rate": 0.5, "top1": 3.0}] * 3, dense, contains="lacks keys")
    _fails(check_study_plot, tmp_path / "missing.png", contains="does not exist")
    (tmp_path / "empty.png").write_bytes(b"not an image")
    _fails(check_study_plot, tmp_path / "empty.png", contains="not a figure")


def test_latency_check(tmp_path):
    plot = tmp_path / "latency.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    run = {"target_rate": 0.5, "flops": 2e7, "latency_ms": 3.0, "top1": 30.0}
    result = {"latency_budget_ms": 3.5, "method": "fit latency against FLOPs", "runs": [run, run], "chosen": run}
    assert check_latency_study(result, plot)
    (tmp_path / "result.json").write_text(json.dumps(result))
    assert check_latency_study(tmp_path / "result.json", plot)
    _fails(check_latency_study, {k: v for k, v in result.items() if k != "chosen"}, plot, contains="lacks")
    _fails(check_latency_study, dict(result, runs=[run]), plot, contains="at least two")
    _fails(check_latency_study, dict(result, method=""), plot, contains="method")
    _fails(check_latency_study, tmp_path / "nothing.json", plot, contains="does not exist")
    _fails(check_latency_study, result, tmp_path / "nothing.png", contains="plot file does not exist")


# ----------------------------------------------------------------------------- wrong answers are caught


def _raise_gap(*args, **kwargs):
    raise NotImplementedError("write your solution here")


WRONG_BINARIZERS = {
    "no gradient (plain comparison)": (lambda p: (p >= 0.5).to(p.dtype), "no gradient"),
    "zero gradient": (_ZeroSTE.apply, "zero everywhere"),
    "sigmoid derivative": (_SigmoidSTE.apply, "sigmoid's derivative"),
    "soft forward": (lambda p: p * 1.0, "soft"),
    "sigmoid forward": (lambda p: torch.sigmoid(p), "not hard"),
    "strict threshold": (lambda p: p + ((p > 0.5).to(p.dtype) - p).detach(), ">="),
    "round": (lambda p: p + (torch.round(p) - p).detach(), "round"),
    "swapped gates": (lambda p: p + ((p < 0.5).to(p.dtype) - p).detach(), "swapped"),
    "gradient only where open": (_OpenOnlySTE.apply, "closed gates too"),
    "unfinished": (_raise_gap, "fill in every gap"),
}


@pytest.mark.parametrize("case", sorted(WRONG_BINARIZERS))
def test_check_binarize_catches(case):
    fn, hint = WRONG_BINARIZERS[case]
    _fails(check_binarize, fn, contains=hint)


def test_check_binarize_clipped_catches():
    _fails(check_binarize_clipped, lambda p, clip: ct.binarize(p), contains="nothing was clipped")
    _fails(check_binarize_clipped, _ClipOnP.apply, contains="not p itself")
    inverted = lambda p, clip: ct.binarize(p) - ct.binarize(p, clip=clip) + ct.binarize(p, clip=clip).detach()
    _fails(check_binarize_clipped, inverted, contains="inverted")
    _fails(check_binarize_clipped, lambda p, clip: ct.binarize(p, clip=clip) * 0.5 + 0.25, contains="not hard")


WRONG_POLARIZERS = {
    "sum instead of mean": (lambda p: (p * (1 - p)).sum(), "summed"),
    "wrong sign": (lambda p: -(p * (1 - p)).mean(), "sign is flipped"),
    "not a tensor": (lambda p: float((p * (1 - p)).mean()), "torch.Tensor"),
    "per-row mean": (lambda p: (p * (1 - p)).mean(0).sum() if p.dim() > 1 else (p * (1 - p)).mean(), "flatten"),
    "not a scalar": (lambda p: p * (1 - p), "single number"),
    "detached": (lambda p: (p * (1 - p)).mean().detach(), "no gradient"),
    "unfinished": (_raise_gap, "fill in every gap"),
}


@pytest.mark.parametrize("case", sorted(WRONG_POLARIZERS))
def test_check_polarizer_catches(case):
    fn, hint = WRONG_POLARIZERS[case]
    _fails(check_polarizer, fn, contains=hint)


WRONG_PENALTIES = {
    "rate for keep ratio": (lambda q, r, w=None: (ct.keep_ratio(q, w) - r) ** 2, "share to *remove*"),
    "weights ignored": (lambda q, r, w=None: (q.mean() - (1 - r)) ** 2, "weights are ignored"),
    "not squared": (lambda q, r, w=None: (ct.keep_ratio(q, w) - (1 - r)).abs(), "square"),
    "sum instead of share": (lambda q, r, w=None: (q.sum() - (1 - r)) ** 2, "divide by the sum"),
    "mean of weighted": (lambda q, r, w=None: ((q if w is None else w * q).mean() - (1 - r)) ** 2, "not by the number"),
}


@pytest.mark.parametrize("case", sorted(WRONG_PENALTIES))
def test_check_sparsity_penalty_catches(case):
    fn, hint = WRONG_PENALTIES[case]
    _fails(check_sparsity_penalty, fn, contains=hint)


def test_check_toy_polarization_catches():
    before = torch.linspace(0.3, 0.7, 40)
    _fails(check_toy_polarization, before, torch.full((40,), 0.5), 0.5, contains="sign is flipped")  # wrong sign
    _fails(check_toy_polarization, before, before.clone(), 0.5, contains="did not move")
    _fails(check_toy_polarization, before, torch.full((40,), 0.01), 0.5, contains="misses the sparsity target")
    _fails(check_toy_polarization, torch.full((40,), 0.01), torch.full((40,), 0.99), 0.0, contains="already polarized")
    _fails(check_toy_polarization, before * 8 - 4, torch.sigmoid(before * 8 - 4), 0.5, contains="probabilities")


def test_check_extraction_catches():
    # drops the wrong channels (the closed ones)
    _fails(check_extraction, _Mid, lambda b, m: _extract_mid(b, m, keep=(~m.bool()).nonzero().flatten() if not m.all() else None),
           position="mid", contains="mask is 1")
    # forgets bn1's running statistics
    def no_bn_stats(block, mask):
        small = _extract_mid(block, mask)
        small.bn1.reset_running_stats()
        return small
    _fails(check_extraction, _Mid, no_bn_stats, position="mid", contains="running_mean")
    # zeroes the closed channels instead of cutting them
    def zeroed(block, mask):
        small = ToyBlock(block.channels, block.hidden)
        small.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("gate")})
        with torch.no_grad():
            small.conv2.weight[:, ~mask.bool()] = 0
        return small
    _fails(check_extraction, _Mid, zeroed, position="mid", contains="not physically smaller")
    _fails(check_extraction, _Mid, lambda b, m: b, position="mid", contains="still contains a gate")
    _fails(check_extraction, _UngatedMid, _extract_mid, position="mid", contains="changes nothing")
    _fails(check_extraction, _Out, _extract_mid, position="mid", contains="wrong number of units")
    # position out: kept channels added at the wrong places
    _fails(check_extraction, _Out, lambda b, m: _extract_out(b, m, scatter=False), position="out", contains="index_add")
    # edits the block it was given
    def in_place(block, mask):
        small = _extract_mid(block, mask)
        with torch.no_grad():
            block.bn2.bias.add_(1.0)
        return small
    _fails(check_extraction, _Mid, in_place, position="mid", contains="changed the gated block")
    _fails(check_extraction, _raise_gap, _extract_mid, position="mid", contains="fill in every gap")
    with pytest.raises(ValueError):
        check_extraction(_Mid, _extract_mid, position="c")


def test_check_leaves_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_extraction(_Mid, _extract_mid, position="mid")
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- reporting


def test_checks_report_to_results_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "checks.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    check_polarizer(ct.polarization)
    with pytest.raises(AssignmentCheckError):
        check_binarize(_SigmoidSTE.apply)
    with open(path, "a") as f:
        f.write("{torn line\n")
    results = read_results_file(path)
    assert results["polarizer"][0] == "PASS"
    assert results["binarize"][0] == "FAIL" and "sigmoid" in results["binarize"][1]
    out = capsys.readouterr().out.splitlines()
    assert [LINE.match(line)["status"] for line in out] == ["PASS", "FAIL"]
    assert len(out) == 2, "a failure is reported on one line"
    # the grader's fallback: the printed lines in a notebook's outputs
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(out) + "\n")]
    assert {k: v[0] for k, v in results_from_outputs(nb).items()} == {"polarizer": "PASS", "binarize": "FAIL"}


# ----------------------------------------------------------------------------- the notebooks


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_solution_notebook_conventions(assignment):
    path = SOLUTIONS / assignment.filename
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# Assignment")
    assert cells[1].cell_type == "code" and 'if "google.colab" in sys.modules:' in cells[1].source
    assert cells[1].source.startswith("import sys") and "%pip install -q" in cells[1].source
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    parameters = tagged[0].source
    names = {"SEED", *assignment.grade_parameters}
    if assignment.id in DATA_NOTEBOOKS:
        names |= {"LIMIT_TRAIN", "LIMIT_TEST", "EPOCHS", "BATCH_SIZE", "GATE_LR"}
        assert "DATA_ROOT = None" in parameters and "DOWNLOAD = True" in parameters
    else:
        assert "DATA_ROOT" not in parameters, "notebooks without data take no data folder"
    if assignment.id == "a5":
        names |= {"REPEATS", "LATENCY_BATCH"}
    for name in names:
        assert f"\n{name} = " in "\n" + parameters, f"{assignment.filename}: the parameters cell sets {name}"
    assert nb.metadata["consensus_assignment"]["id"] == assignment.id
    assert find_assignment(nb.metadata, "renamed.ipynb") is assignment
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c.cell_type == "code"), \
        "solution notebooks are stored without outputs"
    checks = [c for c in cells if "check" in c.metadata.get("tags", [])]
    assert checks and all(c.source.lstrip().startswith("check_") for c in checks)
    assert sum(c.source.count("### BEGIN SOLUTION") for c in cells) >= len(assignment.checks)


def test_registry():
    assert len({a.id for a in ASSIGNMENTS}) == len(ASSIGNMENTS) == 5
    assert len(set(all_checks())) == len(all_checks()), "check names are unique across assignments"
    assert sorted(p.name for p in SOLUTIONS.glob("*.ipynb")) == sorted(a.filename for a in ASSIGNMENTS)
    assert find_assignment({}, "alice_01_straight_through.ipynb").id == "a1"
    assert find_assignment({}, "04_flops_budget_study-Copy1.ipynb").id == "a4"
    assert find_assignment({"consensus_assignment": {"id": "zz"}}, "notes.ipynb") is None
    assert parse_parameter("EPOCHS=2") == ("EPOCHS", 2)
    assert parse_parameter("DOWNLOAD=false") == ("DOWNLOAD", False)
    assert parse_parameter("DATA_ROOT=/data/cifar") == ("DATA_ROOT", "/data/cifar")
    assert parse_parameter("TARGETS=[0.3, 0.5]") == ("TARGETS", [0.3, 0.5])
    with pytest.raises(ValueError):
        parse_parameter("EPOCHS")


# ----------------------------------------------------------------------------- release


def test_strip_solutions_keeps_indentation_and_everything_else():
    source = (
        "def f(x):\n"
        "    y = 1\n"
        "    ### BEGIN SOLUTION\n"
        "    return x + y\n"
        "    ### END SOLUTION\n"
        "\n"
        "### BEGIN SOLUTION\n"
        "z = 2\n"
        "### END SOLUTION\n"
        "print(f)\n"
    )
    assert strip_solutions(source) == (
        "def f(x):\n"
        "    y = 1\n"
        f"    {CODE_STUB}\n"
        "\n"
        f"{CODE_STUB}\n"
        "print(f)\n"
    )
    assert strip_solutions("**Answer.**\n\n### BEGIN SOLUTION\nIt is 42.\n### END SOLUTION", markdown=True) == \
        f"**Answer.**\n\n{MARKDOWN_STUB}"
    for broken in ("### END SOLUTION\n", "### BEGIN SOLUTION\nx = 1\n",
                   "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n"):
        with pytest.raises(ReleaseError):
            strip_solutions(broken)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.text("abc xyz=()", max_size=12)), max_size=12)
)
def test_strip_solutions_removes_exactly_the_blocks(parts):
    """Lines outside the blocks survive in order; each block becomes one stub at its indentation."""
    lines, expected = [], []
    for is_solution, depth, text in parts:
        indent = "    " * depth
        if is_solution:
            lines += [indent + "### BEGIN SOLUTION", indent + "secret = " + repr(text), indent + "### END SOLUTION"]
            expected.append(indent + CODE_STUB)
        else:
            line = indent + "keep = " + repr(text)
            lines.append(line)
            expected.append(line)
    assert strip_solutions("\n".join(lines)) == "\n".join(expected)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["release", str(SOLUTIONS), str(out)]) == 0
    return out


def test_release_writes_student_notebooks(released):
    import ast

    for assignment in ASSIGNMENTS:
        solution = nbformat.read(SOLUTIONS / assignment.filename, as_version=4)
        student = nbformat.read(released / assignment.filename, as_version=4)
        nbformat.validate(student)
        assert len(student.cells) == len(solution.cells)
        assert student.metadata["consensus_assignment"] == {**solution.metadata["consensus_assignment"], "version": "student"}
        text = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        stubs = sum(c.source.count(CODE_STUB) + c.source.count(MARKDOWN_STUB)
                    for s_cell, c in zip(solution.cells, student.cells) if "### BEGIN SOLUTION" in s_cell.source)
        assert stubs == sum(c.source.count("### BEGIN SOLUTION") for c in solution.cells)
        for s_cell, cell in zip(solution.cells, student.cells):
            if "### BEGIN SOLUTION" not in s_cell.source:
                assert cell.source == s_cell.source, "only solution blocks change"
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                if not cell.source.lstrip().startswith(("import sys", "%")):
                    ast.parse(cell.source)
            if "check" in cell.metadata.get("tags", []):
                assert cell.metadata["editable"] is False and cell.metadata["deletable"] is False


def test_release_refuses_bad_sources(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n")])
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "a.ipynb")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["release", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    assert "never closed" in err.getvalue()
    nb.cells[0].source = "x = 1\n"
    nbformat.write(nb, tmp_path / "src" / "a.ipynb")
    with pytest.raises(ReleaseError, match="no '### BEGIN SOLUTION' block"):
        release(tmp_path / "src", tmp_path / "out")
    nb.cells[0].source = "if x:\n### BEGIN SOLUTION\n    y = 2\n### END SOLUTION\n"
    nbformat.write(nb, tmp_path / "src" / "a.ipynb")
    with pytest.raises(ReleaseError, match="not valid Python"):
        release(tmp_path / "src", tmp_path / "out")
    with pytest.raises(ReleaseError, match="must differ"):
        release(tmp_path / "src", tmp_path / "src")


# ----------------------------------------------------------------------------- the batch grader


@contextlib.contextmanager
def _data_env(tmp_path: Path):
    """$CONSENSUS_TUTORIAL_DATA for the kernels: the real CIFAR-10 where there is one, else
    a miniature fake pack (random JPEGs), so the training notebooks run anywhere offline."""
    from consensus_tutorial.data import load_dataset
    from consensus_tutorial.training import default_data_root

    saved = dict(os.environ)
    os.environ.update(data_environment())
    try:
        try:
            load_dataset("cifar10", default_data_root(), "test", limit=10)
        except (FileNotFoundError, ValueError):
            import numpy as np
            from fakedata import make_pack

            classes = [f"class_{i}" for i in range(10)]
            make_pack(tmp_path / "cifar10" / "train_jpeg.npz", np.arange(100) % 10, classes)
            make_pack(tmp_path / "cifar10" / "test_jpeg.npz", np.arange(50) % 10, classes, seed=1)
            os.environ["CONSENSUS_TUTORIAL_DATA"] = str(tmp_path)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _partly_solved(released: Path) -> nbformat.NotebookNode:
    """Assignment 2, student version, with only the sparsity penalty written."""
    solution = nbformat.read(SOLUTIONS / "02_polarizer_and_sparsity.ipynb", as_version=4)
    student = nbformat.read(released / "02_polarizer_and_sparsity.ipynb", as_version=4)
    for s_cell, cell in zip(solution.cells, student.cells):
        if "def sparsity_penalty" in s_cell.source:
            cell.source = s_cell.source
    return student


@pytest.fixture(scope="module")
def graded(released, tmp_path_factory):
    """One run of the command-line grader over: every solution notebook (teacher/), every
    student notebook (student/), a partly solved one (carol/), a notebook of no assignment
    and a broken file (dave/). Returns (exit code, printed table, CSV rows)."""
    root = tmp_path_factory.mktemp("submissions")
    for who, source in (("teacher", SOLUTIONS), ("student", released)):
        (root / who).mkdir()
        for a in ASSIGNMENTS:
            shutil.copy2(source / a.filename, root / who / a.filename)
    (root / "carol").mkdir()
    nbformat.write(_partly_solved(released), root / "carol" / "02_polarizer_and_sparsity.ipynb")
    (root / "dave").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), root / "dave" / "notes.ipynb")
    (root / "dave" / "01_straight_through.ipynb").write_text("{ this is not a notebook")
    table = tmp_path_factory.mktemp("scores") / "scores.csv"
    args = ["grade", str(root), "--csv", str(table), "--threads", "1", "--timeout", "300", "--quiet"]
    for name, value in TINY.items():
        args += ["--param", f"{name}={value}"]
    with _data_env(tmp_path_factory.mktemp("data")), contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    with open(table, newline="") as f:
        rows = {(r["student"], Path(r["file"]).name): r for r in csv.DictReader(f)}
    return code, out.getvalue(), rows


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_solution_notebooks_pass_their_checks(graded, assignment):
    code, _, rows = graded
    assert code == 0
    row = rows[("teacher", assignment.filename)]
    assert row["error"] == "", row["error"]
    assert [row[c] for c in assignment.checks] == ["PASS"] * len(assignment.checks), row
    assert row["passed"] == row["total"] == str(len(assignment.checks))


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_student_notebooks_fail_their_checks(graded, assignment):
    _, _, rows = graded
    row = rows[("student", assignment.filename)]
    assert [row[c] for c in assignment.checks] == ["FAIL"] * len(assignment.checks), row
    assert row["passed"] == "0" and "NotImplementedError: write your solution here" in row["error"]
    other = [c for c in all_checks() if c not in assignment.checks]
    assert all(row[c] == "" for c in other)


def test_grader_score_table(graded):
    _, printed, rows = graded
    carol = rows[("carol", "02_polarizer_and_sparsity.ipynb")]
    # stops at the first gap (the polarizer): the later, solved part counts as failed
    assert (carol["polarizer"], carol["sparsity_penalty"], carol["toy_polarization"]) == ("FAIL", "FAIL", "FAIL")
    notes = rows[("dave", "notes.ipynb")]
    assert notes["assignment"] == "" and "not an assignment notebook" in notes["error"] and notes["total"] == "0"
    assert "unreadable notebook" in rows[("dave", "01_straight_through.ipynb")]["error"]
    assert len(rows) == 2 * len(ASSIGNMENTS) + 3
    lines = printed.splitlines()
    assert "a1: The straight-through binarizer (01_straight_through.ipynb)" in lines
    header = next(line for line in lines if line.startswith("student") and "binarize_clipped" in line)
    assert header.split() == ["student", "file", "binarize", "binarize_clipped", "total", "error"]
    teacher = next(line for line in lines if line.startswith("teacher") and "01_straight" in line)
    assert teacher.split() == ["teacher", "teacher/01_straight_through.ipynb", "PASS", "PASS", "2/2"]
    student = next(line for line in lines if line.startswith("student ") and "01_straight" in line)
    assert student.split()[:5] == ["student", "student/01_straight_through.ipynb", "FAIL", "FAIL", "0/2"]
    solved = sum(len(a.checks) for a in ASSIGNMENTS)
    assert lines[-1] == f"{len(rows)} notebooks, {solved}/{2 * solved + 3} checks passed"


def test_grader_keep_going_gives_partial_credit(released, tmp_path, monkeypatch, capfd):
    root = tmp_path / "submissions"
    root.mkdir()
    nbformat.write(_partly_solved(released), root / "02_polarizer_and_sparsity.ipynb")
    monkeypatch.chdir(tmp_path)  # relative paths, as a teacher types them
    (result,) = grade("submissions", keep_going=True, threads=1, executed_dir="executed")
    assert result.student == "" and result.assignment == "a2"
    assert {k: v[0] for k, v in result.checks.items()} == \
        {"polarizer": "FAIL", "sparsity_penalty": "PASS", "toy_polarization": "FAIL"}
    assert "NotImplementedError" in result.error
    executed = nbformat.read(result.executed, as_version=4)  # kept, for feedback to the student
    assert any("CHECK sparsity_penalty: PASS" in o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    # the kernel's own log lines (Jupyter's TCP warning, shutdown's "KeyboardInterrupt caught
    # in kernel") go to kernel.log beside the executed notebook, not into the teacher's terminal
    err = capfd.readouterr().err
    assert "IPKernelApp" not in err and "KeyboardInterrupt" not in err
    assert (Path(result.executed).parent / "kernel.log").is_file()


def test_grader_survives_a_timeout(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(60)")])
    nb.metadata["consensus_assignment"] = {"id": "a1"}
    nbformat.write(nb, tmp_path / "slow.ipynb")
    (result,) = grade(tmp_path, timeout=2, threads=1)
    assert result.assignment == "a1" and result.passed == 0 and result.total == 2
    assert "Timeout" in result.error or "timed out" in result.error.lower(), result.error


def test_teachers_guide_covers_every_assignment():
    guide = (ROOT / "book" / "teachers_guide.md").read_text()
    assert "python -m consensus_tutorial.assignments release assignments/solutions assignments/release" in guide
    assert "python -m consensus_tutorial.assignments grade submissions/ --csv scores.csv" in guide
    for assignment in ASSIGNMENTS:
        assert assignment.filename in guide
        assert all(f"`{check}`" in guide for check in assignment.checks), assignment.id
        assert assignment.minutes.split(",")[0] in guide
        fixed = ", ".join(f"{k}={v}" for k, v in assignment.grade_parameters.items())
        assert f"`{fixed}`" in guide, f"the guide's table of grading parameters is out of date for {assignment.id}"
