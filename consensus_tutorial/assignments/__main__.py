"""``python -m consensus_tutorial.assignments {release,grade,list}``.

    python -m consensus_tutorial.assignments release SOURCE_DIR OUT_DIR
    python -m consensus_tutorial.assignments grade SUBMISSIONS_DIR [--timeout S] [--csv FILE]
        [--param NAME=VALUE ...] [--keep-going] [--threads N] [--executed DIR] [--kernel NAME]
    python -m consensus_tutorial.assignments list
"""

from __future__ import annotations

import argparse
import sys

from .grading import format_table, grade, parse_parameter, write_csv
from .registry import ASSIGNMENTS
from .release import ReleaseError, release


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consensus_tutorial.assignments",
        description="Release student versions of the assignment notebooks, and grade submissions in batch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rel = sub.add_parser("release", help="write student notebooks (solutions cut out, outputs cleared)")
    rel.add_argument("source", metavar="SOURCE_DIR", help="folder of solution notebooks (e.g. assignments/solutions)")
    rel.add_argument("out", metavar="OUT_DIR", help="folder to write the student notebooks to")

    gr = sub.add_parser("grade", help="run every submitted notebook and print a score table")
    gr.add_argument("submissions", metavar="SUBMISSIONS_DIR",
                    help="one folder per student (alice/01_straight_through.ipynb), or the notebooks themselves")
    gr.add_argument("--timeout", type=float, default=600, metavar="S",
                    help="seconds one cell may run before it is stopped and counted as an error (default 600)")
    gr.add_argument("--csv", metavar="FILE", help="also write the scores as CSV (one row per notebook)")
    gr.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="papermill parameter for every notebook, over the assignment's small defaults (repeatable)")
    gr.add_argument("--keep-going", action="store_true",
                    help="run the cells after an error too (partial credit); default: stop at the first error")
    gr.add_argument("--threads", type=int, metavar="N", help="OMP_NUM_THREADS for the kernels (1 is fastest on a busy machine)")
    gr.add_argument("--executed", metavar="DIR", help="keep the executed notebooks there (to hand back as feedback)")
    gr.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    gr.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("list", help="the assignments, their checks and the grader's parameters")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "release":
        try:
            written = release(args.source, args.out)
        except (ReleaseError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for path in written:
            print(path)
        print(f"{len(written)} student notebooks written to {args.out}", file=sys.stderr)
        return 0
    if args.command == "list":
        for a in ASSIGNMENTS:
            print(f"{a.id}  {a.filename}  {a.title}{' (optional)' if a.optional else ''}")
            print(f"    checks: {', '.join(a.checks)}; about {a.minutes}; grader parameters {dict(a.grade_parameters)}")
        return 0
    try:
        parameters = dict(parse_parameter(p) for p in args.param)
        grades = grade(
            args.submissions, timeout=args.timeout, parameters=parameters, kernel=args.kernel,
            keep_going=args.keep_going, threads=args.threads, executed_dir=args.executed,
            log=None if args.quiet else sys.stderr,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not grades:
        print(f"error: no notebooks (*.ipynb) under {args.submissions}", file=sys.stderr)
        return 2
    print(format_table(grades))
    if args.csv:
        write_csv(grades, args.csv)
        print(f"scores written to {args.csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
