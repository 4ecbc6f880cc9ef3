"""The `rlkd` command. Each subcommand is one small function over one library call; user errors
exit 1 with a message, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rlkd import __version__
from rlkd.errors import RLKDError, SpecError

if TYPE_CHECKING:
    from rlkd.spec.resource import RLKDJob


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


def _job(path: str | None) -> RLKDJob:
    """The job a learner-side command runs: FILE, else the pod's $RLKD_JOB_FILE."""
    from rlkd.spec.runtime import JOB_FILE_ENV
    from rlkd.spec.validate import load_job

    path = path or os.environ.get(JOB_FILE_ENV)
    if not path:
        raise RLKDError(f"give the RLKDJob file (FILE or --job FILE), or set ${JOB_FILE_ENV}")
    return load_job(path)


def _cache_dir(job: RLKDJob) -> Path:
    """Where a command keeps its local copies of the job's models (`rlkd train`'s default
    workdir)."""
    import tempfile

    from rlkd.spec.resource import namespace_of

    return Path(tempfile.gettempdir(), "rlkd", namespace_of(job), job.metadata.name)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Sample (teacher.source model) and decompose the teacher side before training."""
    from rlkd.models import model_loader
    from rlkd.prepare import prepare
    from rlkd.store.job import job_stores

    job = _job(args.file)
    name = args.file or job.metadata.name
    stores = job_stores(job, store_dir=args.store_dir)
    summary = prepare(
        job,
        stores,
        batch_size=args.batch_size,
        say=lambda line: print(f"{name}: {line}"),
        local=model_loader(stores, _cache_dir(job)),
    )
    return 1 if summary.failures else 0


def cmd_annotate(args: argparse.Namespace) -> int:
    """Decompose the teacher's paths with the annotator into the GSRM build's SFT records."""
    from rlkd.build.annotate import SHARD_SIZE, annotate
    from rlkd.store.job import job_stores

    job = _job(args.file)
    stores = job_stores(job, store_dir=args.store_dir)
    summary = annotate(
        job,
        stores,
        cache_dir=_cache_dir(job),
        concurrency=args.concurrency,
        shard_size=args.shard_size or SHARD_SIZE,
        bars=True,
    )
    return 1 if summary.failures else 0


def _ranks(command: str, argv: Sequence[str]) -> int | None:
    """In a pod with several GPUs, run `rlkd COMMAND` once per GPU (torchrun) and return its exit
    status; None in a rank, or where one process is all there is: run the command in place."""
    from rlkd.train.launch import is_rank, launch, topology

    topo = topology(os.environ)
    if topo.world_size > 1 and not is_rank(os.environ):
        return launch(topo, [command, *argv])
    return None


def cmd_train(args: argparse.Namespace) -> int:
    """The learner: one process per GPU (torchrun) when the pod has several, else in place."""
    if (status := _ranks("train", args.argv)) is not None:
        return status
    from rlkd.store.job import job_stores
    from rlkd.train.recipe import train

    job = _job(args.job)
    stores = job_stores(job, store_dir=args.store_dir)
    train(job, stores, workdir=Path(args.workdir) if args.workdir else _cache_dir(job))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Greedy accuracy and structure alignment of a model on the job's held-out problems."""
    import tempfile

    from rlkd.data import evaluation_records
    from rlkd.eval import save_evaluation
    from rlkd.models import local_model, model_loader, run_model
    from rlkd.prepare import with_teacher_paths
    from rlkd.spec.job import EvaluationSpec
    from rlkd.store.job import job_stores
    from rlkd.train.recipe import describe, run_evaluation

    job = _job(args.file)
    stores = job_stores(job, store_dir=args.store_dir)
    cache = Path(tempfile.gettempdir(), "rlkd-eval", job.metadata.name)
    final = None if args.model else run_model(stores.run, cache)
    if final is not None:
        ref, name, model_dir = final[0], "after", str(final[1])
    else:
        ref = args.model or job.spec.student.model
        name = "before" if ref == job.spec.student.model else "model"
        model_dir = local_model(ref, stores, cache, field="--model" if args.model else "spec")
    records = with_teacher_paths(
        job,
        stores.run,
        evaluation_records(job.spec, stores, job.spec.evaluation or EvaluationSpec()),
    )
    local = model_loader(stores, cache)
    evaluation = run_evaluation(
        job, stores, records, model_dir, ref, bars=True, label=name, local=local
    )
    print(f"{ref}: {describe(evaluation)}")
    if name != "model":
        print(f"written to {save_evaluation(stores.run, name, evaluation)} ({name})")
    return 0


def cmd_train_gsrm(args: argparse.Namespace) -> int:
    """The GSRM's SFT (spec.gsrm.build): one process per GPU (torchrun) like `rlkd train`."""
    if (status := _ranks("train-gsrm", args.argv)) is not None:
        return status
    from rlkd.build.sft import train_gsrm
    from rlkd.spec.progress import GSRM_BUILD_PREFIX
    from rlkd.store.job import job_stores

    job = _job(args.file)
    stores = job_stores(job, store_dir=args.store_dir)
    workdir = Path(args.workdir) if args.workdir else _cache_dir(job) / GSRM_BUILD_PREFIX
    train_gsrm(job, stores, workdir=workdir, bars=sys.stderr.isatty())
    return 0


def cmd_eval_gsrm(args: argparse.Namespace) -> int:
    """The built GSRM's quality gate on the held-out annotations."""
    import tempfile

    from rlkd.build.quality import evaluate_gsrm
    from rlkd.store.job import job_stores

    job = _job(args.file)
    stores = job_stores(job, store_dir=args.store_dir)
    cache = Path(tempfile.gettempdir(), "rlkd-eval-gsrm", job.metadata.name)
    # A GSRM below the gate raises GateFailed (an RLKDError): exit 1 with its one line.
    evaluate_gsrm(job, stores, cache_dir=cache, model=args.model, bars=sys.stderr.isatty())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The whole job on this machine, with a report."""
    from rlkd.local import run
    from rlkd.train.watchdog import StallError

    job = _job(args.file)
    try:
        run(job, Path(args.output or f"rlkd-runs/{job.metadata.name}"))
    except StallError as exc:
        # What hung (a request, a worker thread) may never return, and the interpreter would
        # wait for it at exit: say so and leave at once. The store holds every checkpoint.
        print(f"rlkd run: {exc}; run the same command again to resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
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
        "RLKDJob in FILE: the ConfigMap, the NetworkPolicy, the vLLM Deployments and Services, "
        "the PyTorchJob. Offline; the operator's defaults come from the same environment "
        "variables as the operator's (RLKD_VLLM_IMAGE, RLKD_TRAINER_IMAGE, "
        "RLKD_DEFAULT_STORAGE_*, RLKD_POD_*, RLKD_HUB_*, RLKD_MONITORING_NAMESPACE; see "
        "docs/children.md). Exit 1 with one line per problem when FILE is not valid.",
    )
    render.add_argument("file", metavar="FILE")
    render.set_defaults(func=cmd_render)

    prepare = sub.add_parser(
        "prepare",
        help="cache the teachers' GSRM decompositions before training",
        description="Sample the teacher's paths (teacher.source model) and decompose the teacher "
        "reasoning of every example the RLKDJob in FILE trains and evaluates on with its GSRM "
        "(spec.gsrm; vllm backends are reached at $RLKD_<ROLE>_URL), and cache them in the job's "
        "store, where the learner reads them; a summary goes to prepare.json in the run's "
        "prefix. Cached work is not done again. In a pod (the operator's prepare Job) it reads "
        "the operator's environment ($RLKD_JOB_FILE, $RLKD_STORE_*, the mounted storage Secret). "
        "Exit 1 when some failed (they are counted by reason).",
    )
    prepare.add_argument("file", metavar="FILE", nargs="?", help="default: $RLKD_JOB_FILE")
    prepare.add_argument(
        "--store-dir",
        metavar="DIR",
        help="a local directory as the store (store:// paths are read from it); default: the "
        "pod's $RLKD_STORE_* or spec.storage, with keys from the mounted storage Secret or "
        "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY",
    )
    prepare.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="decompositions per GSRM call (default 64)",
    )
    prepare.set_defaults(func=cmd_prepare)

    store_dir_help = (
        "a local directory as the store; default: the pod's $RLKD_STORE_* or spec.storage, with "
        "keys from the mounted storage Secret or $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY"
    )
    annotate = sub.add_parser(
        "annotate",
        help="decompose the teacher's paths with the annotator (a GSRM build's SFT records)",
        description="For the GSRM build of the RLKDJob in FILE (spec.gsrm.build), send the "
        "teacher reasoning of the training examples (spec.dataset and its selection, at most "
        "gsrm.build.limit) to the annotator with the domain's decomposition prompt, and keep "
        "each well-formed decomposition as an SFT record in the run's gsrm-build/annotations/ "
        "(malformed ones, after one retry with a reminder, in gsrm-build/rejected/ with the "
        "reason); a summary goes to gsrm-build/annotate.json. A rerun skips the paths already "
        "accepted or rejected. The annotator's API key is read from $RLKD_ANNOTATOR_API_KEY; a "
        "vllm annotator is reached at $RLKD_ANNOTATOR_URL. Exit 1 when some paths failed (the "
        "annotator did not answer): they are tried again next time.",
    )
    annotate.add_argument("file", metavar="FILE", nargs="?", help="default: $RLKD_JOB_FILE")
    annotate.add_argument("--store-dir", metavar="DIR", help=store_dir_help)
    annotate.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="paths in flight at once (default: the annotator's request.maxConcurrency)",
    )
    annotate.add_argument(
        "--shard-size",
        type=_positive_int,
        metavar="N",
        help="records per shard written to the store (default 100): a killed run loses at "
        "most the records of its unwritten shard",
    )
    annotate.set_defaults(func=cmd_annotate)

    train = sub.add_parser(
        "train",
        help="the learner: GRPO with the RLKD rewards (the PyTorchJob's command)",
        description="Prepare, evaluate before (spec.evaluation.baseline), train with TRL GRPO, "
        "evaluate after, and leave checkpoints, the progress document and the final model in "
        "the job's store; a restart resumes from the newest complete checkpoint. In a pod it "
        "reads the operator's environment ($RLKD_JOB_FILE, $RLKD_STORE_*, $RLKD_<ROLE>_URL) and "
        "starts one process per GPU from the Training Operator's PET_* variables.",
    )
    train.add_argument("--job", metavar="FILE", help="the RLKDJob; default: $RLKD_JOB_FILE")
    train.add_argument("--store-dir", metavar="DIR", help=store_dir_help)
    train.add_argument("--workdir", metavar="DIR", help="local working directory")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "eval",
        help="greedy accuracy and structure alignment of a model on held-out problems",
        description="Evaluate a model (default: the run's final model when it is in the store, "
        "else the student) on the job's held-out problems (spec.evaluation), greedily, and "
        "write the results with per-example rows to the run's evaluation.json.",
    )
    evaluate.add_argument("file", metavar="FILE", nargs="?", help="default: $RLKD_JOB_FILE")
    evaluate.add_argument("--model", metavar="REF", help="the model to evaluate")
    evaluate.add_argument("--store-dir", metavar="DIR", help=store_dir_help)
    evaluate.set_defaults(func=cmd_eval)

    train_gsrm = sub.add_parser(
        "train-gsrm",
        help="fine-tune the GSRM on the annotator's decompositions (spec.gsrm.build)",
        description="Supervised fine-tuning (TRL SFT) of spec.gsrm.build.baseModel on the "
        "decompositions `rlkd annotate` wrote, minus the held-out ones, with the loss on the "
        "decomposition only (spec.gsrm.build.training); checkpoints and a progress document go to "
        "the run's gsrm-build/ prefix, the model to spec.gsrm.model. A restart resumes from the "
        "newest complete checkpoint; a finished build is not done again. In a pod it reads the "
        "operator's environment ($RLKD_JOB_FILE, $RLKD_STORE_*, $RLKD_DEEPSPEED_FILE) and starts "
        "one process per GPU from the Training Operator's PET_* variables.",
    )
    train_gsrm.add_argument("file", metavar="FILE", nargs="?", help="default: $RLKD_JOB_FILE")
    train_gsrm.add_argument("--store-dir", metavar="DIR", help=store_dir_help)
    train_gsrm.add_argument("--workdir", metavar="DIR", help="local working directory")
    train_gsrm.set_defaults(func=cmd_train_gsrm)

    eval_gsrm = sub.add_parser(
        "eval-gsrm",
        help="the built GSRM's quality gate on held-out annotations",
        description="Decompose the held-out annotations' reasoning with the built GSRM "
        "(spec.gsrm.model, or --model), greedily, and compare with the annotator's "
        "decompositions: parse rate, step-count agreement, and per-step agreement by the judge "
        "(spec.judge, asked only when spec.gsrm.build.gate.minStepAgreement > 0). The report, "
        "with per-example rows, goes to the run's "
        "gsrm-build/evaluation.json. Exit 1 when the GSRM misses spec.gsrm.build.gate.",
    )
    eval_gsrm.add_argument("file", metavar="FILE", nargs="?", help="default: $RLKD_JOB_FILE")
    eval_gsrm.add_argument(
        "--model", metavar="REF", help="the GSRM to check (default: spec.gsrm.model)"
    )
    eval_gsrm.add_argument("--store-dir", metavar="DIR", help=store_dir_help)
    eval_gsrm.set_defaults(func=cmd_eval_gsrm)

    run = sub.add_parser(
        "run",
        help="run an RLKDJob on this machine, end to end, with a report",
        description="The same RLKDJob file, no cluster: (with spec.gsrm.build: annotate, "
        "train-gsrm, eval-gsrm) prepare, evaluate before, train, evaluate after, report. The "
        "store is spec.storage when the spec names one, else DIR/store; inference runs "
        "in-process. A rerun with the same DIR resumes.",
    )
    run.add_argument("file", metavar="FILE")
    run.add_argument(
        "--output", metavar="DIR", help="report and local store (default: rlkd-runs/<job name>)"
    )
    run.set_defaults(func=cmd_run)

    operator = sub.add_parser(
        "operator",
        help="run the RLKDJob operator (kopf)",
        description="Reconcile RLKDJobs into inference servers, a learner and artifacts. Uses "
        "$KUBECONFIG (or ~/.kube/config) outside a cluster and the service account inside one. "
        "Chart values arrive as environment variables (RLKD_VLLM_IMAGE, RLKD_TRAINER_IMAGE, "
        "RLKD_DEFAULT_STORAGE_*, RLKD_POD_*, RLKD_HUB_*, RLKD_MONITORING_NAMESPACE). See "
        "docs/operator.md.",
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RLKDError as exc:
        print(f"rlkd {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"rlkd {args.command}: stopped; run the same command again to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
