"""The `rlkd` command. Each subcommand is one small function over one library call; user errors
exit 1 with a message, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rlkd import __version__
from rlkd.errors import RLKDError, SpecError


def cmd_validate(args: argparse.Namespace) -> int:
    """Check RLKDJob files offline; print one line per problem."""
    from rlkd.spec.validate import check_file

    failed = False
    for path in args.files:
        jobs, problems = check_file(path)
        for line in problems:
            print(line)
        if problems:
            failed = True
        elif not args.quiet:
            names = ", ".join(f"RLKDJob/{job.metadata.name}" for job in jobs)
            print(f"{path}: valid ({names})")
    return 1 if failed else 0


def cmd_crd(args: argparse.Namespace) -> int:
    """Print the RLKDJob CustomResourceDefinition derived from the spec."""
    from rlkd.spec.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print the children of an RLKDJob file (multi-document YAML), built offline."""
    from rlkd.k8s.defaults import OperatorDefaults
    from rlkd.k8s.render import render_file

    try:
        sys.stdout.write(render_file(args.file, OperatorDefaults.from_env(os.environ)))
    except SpecError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Decompose and cache the teacher reasoning of a job's examples before training."""
    from rlkd.gsrm.backends import build_decomposer
    from rlkd.prepare import local_stores, nothing_to_prepare, prepare_teachers, s3_stores
    from rlkd.spec.validate import load_job

    job = load_job(args.file)
    if (reason := nothing_to_prepare(job)) is not None:
        print(f"{args.file}: nothing to prepare: {reason}")
        return 0
    assert job.spec.gsrm is not None  # rewards.structure > 0 requires it (spec rule)
    stores = local_stores(job, args.store_dir) if args.store_dir else s3_stores(job)
    count, failures = prepare_teachers(
        job, stores, build_decomposer(job.spec.gsrm), batch_size=args.batch_size
    )
    print(f"{args.file}: teacher decompositions of {count} examples cached in {stores.run.uri}")
    if failures:
        counts = ", ".join(f"{reason} {n}" for reason, n in failures.items())
        print(f"{args.file}: {sum(failures.values())} failed ({counts}); run again to retry them")
        return 1
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the RLKDJob operator until SIGTERM (kopf is imported only here)."""
    from rlkd_operator.main import run
    from rlkd_operator.settings import Options

    if not (args.namespaces or args.all_namespaces):
        print(
            "rlkd operator: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr
        )
        return 1
    options = Options(
        namespaces=tuple(args.namespaces),
        clusterwide=args.all_namespaces,
        standalone=args.standalone,
        poll_seconds=args.poll_seconds,
    )
    run(
        options,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        verbose=args.verbose,
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlkd",
        description="RLKD reasoning distillation, declared as one RLKDJob.",
    )
    parser.add_argument("--version", action="version", version=f"rlkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser(
        "validate",
        help="check RLKDJob files offline",
        description="Check RLKDJob files (multi-document YAML too) without a cluster. "
        "Exit 0 when all are valid, 1 with one line per problem otherwise.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    validate.set_defaults(func=cmd_validate)

    crd = sub.add_parser(
        "crd",
        help="print the RLKDJob CRD",
        description="Print the CustomResourceDefinition generated from the typed spec.",
    )
    crd.set_defaults(func=cmd_crd)

    render = sub.add_parser(
        "render",
        help="print the Kubernetes objects an RLKDJob becomes",
        description="Print, as multi-document YAML, the children the operator creates for the "
        "RLKDJob in FILE: the ConfigMap, the vLLM Deployments and Services, the PyTorchJob. "
        "Offline; the operator's defaults come from the same environment variables as the "
        "operator's (RLKD_VLLM_IMAGE, RLKD_TRAINER_IMAGE, RLKD_DEFAULT_STORAGE_*; see "
        "docs/children.md). Exit 1 with one line per problem when FILE is not valid.",
    )
    render.add_argument("file", metavar="FILE")
    render.set_defaults(func=cmd_render)

    prepare = sub.add_parser(
        "prepare",
        help="cache the teachers' GSRM decompositions before training",
        description="Decompose the teacher reasoning of every example the RLKDJob in FILE trains "
        "on with its GSRM (spec.gsrm; a vllm backend is reached at $RLKD_GSRM_URL) and cache "
        "the steps in the job's store, where the learner reads them. Cached examples are not "
        "decomposed again. Exit 1 when some failed (they are counted by reason).",
    )
    prepare.add_argument("file", metavar="FILE")
    prepare.add_argument(
        "--store-dir",
        metavar="DIR",
        help="a local directory as the store (store:// paths are read from it); default: "
        "spec.storage, with keys from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY",
    )
    prepare.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="decompositions per GSRM call (default 64)",
    )
    prepare.set_defaults(func=cmd_prepare)

    operator = sub.add_parser(
        "operator",
        help="run the RLKDJob operator (kopf)",
        description="Reconcile RLKDJobs into inference servers, a learner and artifacts. Uses "
        "$KUBECONFIG (or ~/.kube/config) outside a cluster and the service account inside one. "
        "Chart values arrive as environment variables (RLKD_VLLM_IMAGE, RLKD_TRAINER_IMAGE, "
        "RLKD_DEFAULT_STORAGE_*). See docs/operator.md.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    operator.add_argument(
        "--standalone",
        action="store_true",
        help="no peering with other replicas (only when exactly one replica runs)",
    )
    operator.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="kopf's liveness endpoint (default: %(default)s)",
    )
    operator.add_argument("--metrics-port", type=int, default=9090, help="Prometheus port")
    operator.add_argument("--metrics-address", default="0.0.0.0", help="Prometheus address")
    operator.add_argument(
        "--poll-seconds",
        type=float,
        default=30.0,
        help="how often progress documents and failed store checks are read again",
    )
    operator.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    operator.set_defaults(func=cmd_operator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RLKDError as exc:
        print(f"rlkd {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
