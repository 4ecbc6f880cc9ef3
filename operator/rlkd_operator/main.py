"""`rlkd operator`: run the kopf operator with the handlers of rlkd_operator.handlers."""

from __future__ import annotations

import asyncio
import logging

import kopf

from rlkd.k8s import OperatorDefaults
from rlkd_operator import handlers
from rlkd_operator.kube import Kube, load_configuration
from rlkd_operator.metrics import Metrics
from rlkd_operator.settings import Options
from rlkd_operator.stores import Stores
from rlkd_operator.world import World


def build_runtime(
    options: Options, defaults: OperatorDefaults, kubeconfig: str | None = None
) -> handlers.Runtime:
    """What the handlers share, wired once: cluster access, stores, the watched world, metrics."""
    configuration = load_configuration(kubeconfig)
    kube = Kube(configuration)
    world = World()
    return handlers.Runtime(
        defaults=defaults,
        options=options,
        configuration=configuration,
        kube=kube,
        stores=Stores(
            kube.secret_credentials,
            defaults,
            timeout=options.store_timeout_seconds,
            retry_after=options.poll_seconds,
        ),
        world=world,
        metrics=Metrics(world),
    )


def run(
    options: Options,
    *,
    liveness: str,
    metrics_port: int,
    metrics_address: str,
    verbose: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM: kopf with JSON logs, its liveness endpoint and peering."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON)
    logging.getLogger("rlkd").setLevel(logging.DEBUG if verbose else logging.INFO)
    runtime = build_runtime(options, OperatorDefaults.from_env())
    runtime.metrics.serve(metrics_port, metrics_address)
    asyncio.run(
        kopf.operator(
            clusterwide=options.clusterwide,
            namespaces=options.namespaces,
            standalone=options.standalone,
            liveness_endpoint=liveness,
            memo=runtime,
        )
    )
