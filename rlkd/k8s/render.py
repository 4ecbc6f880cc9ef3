"""`rlkd render`: the children of an RLKDJob file as multi-document YAML, offline, for review in
GitOps pull requests and for golden-file tests."""

from __future__ import annotations

from pathlib import Path

from rlkd.errors import SpecError
from rlkd.k8s.children import build_children
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.naming import store_secret_name
from rlkd.k8s.resolve import resolve_job
from rlkd.k8s.store_secret import copied_secret
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.spec.validate import load_job
from rlkd.spec.yamlio import dump_all


def render_job(job: RLKDJob, defaults: OperatorDefaults) -> str:
    """The children of `job` in apply order, with a header saying what the operator adds."""
    header = (
        f"# The children of RLKDJob {namespace_of(job)}/{job.metadata.name}, "
        "as the operator creates them.\n"
    )
    if not job.metadata.uid:
        header += (
            "# ownerReferences are left out: only the API server assigns the RLKDJob's uid; the\n"
            "# operator sets them (controller, blockOwnerDeletion) on every child.\n"
        )
    if (source := copied_secret(resolve_job(job, defaults), defaults)) is not None:
        header += (
            f"# Pods read the store keys from Secret {store_secret_name(job)}: the operator\n"
            f"# copies it from {source} (the default store's Secret) and keeps it equal.\n"
        )
    return header + dump_all(build_children(job, defaults).all())


def render_file(path: str | Path, defaults: OperatorDefaults) -> str:
    """`render_job` of the one RLKDJob in a file; SpecError with the problems `rlkd validate`
    prints when the file is not valid, or the problem that keeps it from being built."""
    job = load_job(path)
    try:
        return render_job(job, defaults)
    except SpecError as exc:
        raise SpecError([f"{path}: {problem}" for problem in exc.problems]) from None
