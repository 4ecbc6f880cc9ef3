"""The pod settings every child pod gets (spec.pods over the operator's defaults), the restricted
Pod Security level, the hub cache and token, the startup budget, and the inference
NetworkPolicy: table tests of the builders."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from rlkd.errors import SpecError
from rlkd.k8s import OperatorDefaults, build_children, labels
from rlkd.k8s.inference import STARTUP_PERIOD_SECONDS
from rlkd.spec.job import (
    RESERVED_LABEL_PREFIX,
    RESERVED_LABELS,
    HubSpec,
    NetworkSpec,
    PodSettings,
)
from rlkd.spec.runtime import BUILDER_ENV, BUILDER_ENV_PREFIX
from tests.jobs import DEFAULTS, STORE, make_job
from tests.podsecurity import restricted_problems

KUBERNETES_VERSION = "1.30"
EVERY_ROLE = {
    "teacher": {"source": "model", "model": {"model": "deepseek-ai/DeepSeek-R1"}},
    "learner": {"replicas": 2},
    "storage": STORE.model_copy(update={"region": "eu-1"}).to_dict(),
}
"""A job with a pod of every kind: gsrm, judge, teacher and rollout servers, Master and Worker."""
SETTINGS = {
    "serviceAccountName": "trainer-identity",
    "imagePullSecrets": ["registry"],
    "labels": {"team": "math"},
    "annotations": {"sidecar.istio.io/inject": "false"},
    "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
}


def templates(children: Any) -> dict[str, dict[str, Any]]:
    """Every pod template of the children, by '<kind>/<name or replica type>'."""
    out = {
        f"Deployment/{r}": c.deployment["spec"]["template"] for r, c in children.inference.items()
    }
    for kind, replica in children.learner["spec"]["pytorchReplicaSpecs"].items():
        out[f"PyTorchJob/{kind}"] = replica["template"]
    if children.prepare is not None:
        out["Job/prepare"] = children.prepare["spec"]["template"]
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- the checker itself ------------------------------------------------------------------------

PASSING = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    pod = copy.deepcopy(PASSING)
    node: Any = pod
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[last] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "problem"),
    [
        (_with("hostNetwork", True), "spec.hostNetwork"),
        (_with("securityContext.runAsNonRoot", False), "runAsNonRoot"),
        (_with("securityContext.runAsUser", 0), "runAsUser"),
        (_with("securityContext.seccompProfile", {"type": "Unconfined"}), "seccompProfile"),
        (_with("containers.0.securityContext.privileged", True), "privileged"),
        (_with("containers.0.securityContext.allowPrivilegeEscalation", True), "Escalation"),
        (_with("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}), "drop"),
        (
            _with(
                "containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["IPC_LOCK"]}
            ),
            "add",
        ),
        (_with("volumes", [{"name": "h", "hostPath": {"path": "/"}}]), "spec.volumes[h]"),
        (_with("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    ],
)
def test_the_restricted_checker_refuses_what_the_standard_refuses(
    pod: dict[str, Any], problem: str
) -> None:
    assert restricted_problems(PASSING) == []
    problems = restricted_problems(pod)
    assert problems and any(problem in p for p in problems), problems


# --- security ----------------------------------------------------------------------------------


def test_every_child_pod_passes_restricted_by_default() -> None:
    job = make_job({**EVERY_ROLE, "hub": {"cacheClaim": "hf-cache", "tokenSecret": "hf"}})
    pods = templates(build_children(job, DEFAULTS))
    assert set(pods) == {
        "Deployment/gsrm",
        "Deployment/judge",
        "Deployment/teacher",
        "Deployment/rollout",
        "PyTorchJob/Master",
        "PyTorchJob/Worker",
        "Job/prepare",
    }
    for where, template in pods.items():
        assert restricted_problems(template["spec"]) == [], where
        assert template["spec"]["securityContext"]["runAsUser"] != 0


def test_security_none_leaves_the_image_its_own_user() -> None:
    job = make_job({**EVERY_ROLE, "pods": {"security": "none"}})
    for where, template in templates(build_children(job, DEFAULTS)).items():
        assert "securityContext" not in template["spec"], where
        [container] = template["spec"]["containers"]
        assert "securityContext" not in container and "HOME" not in env_of(container)
        assert restricted_problems(template["spec"]), where


def test_the_operator_chooses_the_default_level() -> None:
    defaults = OperatorDefaults(storage=STORE, pods=PodSettings(security="none"))
    for template in templates(build_children(make_job(), defaults)).values():
        assert "securityContext" not in template["spec"]
    job = make_job({"pods": {"security": "restricted"}})
    for template in templates(build_children(job, defaults)).values():
        assert restricted_problems(template["spec"]) == []


# --- pod settings ------------------------------------------------------------------------------


def test_pod_settings_reach_every_child_pod() -> None:
    job = make_job({**EVERY_ROLE, "pods": SETTINGS})
    children = build_children(job, DEFAULTS)
    for where, template in templates(children).items():
        spec = template["spec"]
        assert spec["serviceAccountName"] == "trainer-identity", where
        assert spec["imagePullSecrets"] == [{"name": "registry"}], where
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}, where
        assert template["metadata"]["labels"]["team"] == "math", where
        kind, name = where.split("/")
        component = {"PyTorchJob": "learner", "Job": "prepare"}.get(kind, "inference")
        role = name if component == "inference" else None
        assert labels(job, component, role).items() <= template["metadata"]["labels"].items()
        for container in spec["containers"]:
            assert env_of(container)["NCCL_DEBUG"] == "INFO", where
    for child in children.all():
        kubernetes_validate.validate(strict_form(child), KUBERNETES_VERSION, strict=True)


def strict_form(child: dict[str, Any]) -> dict[str, Any]:
    """A PyTorchJob as the PodTemplate its replicas become (kubernetes-validate knows no CRDs)."""
    if child["kind"] != "PyTorchJob":
        return child
    template = child["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "l"},
        "template": template,
    }


def test_an_empty_env_value_is_written_as_the_api_server_stores_it() -> None:
    job = make_job({"pods": {"env": [{"name": "NCCL_IB_DISABLE"}]}})
    [container] = templates(build_children(job, DEFAULTS))["PyTorchJob/Master"]["spec"][
        "containers"
    ]
    assert {"name": "NCCL_IB_DISABLE"} in container["env"]


def test_without_settings_pods_get_no_identity_or_pull_secrets() -> None:
    for template in templates(build_children(make_job(), DEFAULTS)).values():
        assert not {"serviceAccountName", "imagePullSecrets"} & set(template["spec"])
        assert "annotations" not in template["metadata"]


def test_the_job_overrides_the_operator_defaults_key_by_key() -> None:
    defaults = OperatorDefaults(
        storage=STORE,
        pods=PodSettings(
            service_account_name="operator-default",
            image_pull_secrets=["mirror"],
            labels={"team": "shared", "cost-center": "42"},
            annotations={"sidecar.istio.io/inject": "false"},
            env=[{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
        ),
    )
    job = make_job(
        {
            "pods": {
                "serviceAccountName": "mine",
                "labels": {"team": "math"},
                "env": [{"name": "B", "value": "2"}],
            }
        }
    )
    template = templates(build_children(job, defaults))["PyTorchJob/Master"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == "mine"
    assert spec["imagePullSecrets"] == [{"name": "mirror"}]
    assert {"team": "math", "cost-center": "42"}.items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert {"A": "1", "B": "2"}.items() <= env_of(spec["containers"][0]).items()
    # An explicit empty list means none, not the operator's.
    none = make_job({"pods": {"imagePullSecrets": []}})
    assert (
        "imagePullSecrets"
        not in templates(build_children(none, defaults))["PyTorchJob/Master"]["spec"]
    )


RESERVED_LABEL_LINE = (
    "spec.pods.labels: must not set rlkd.ai/* nor app.kubernetes.io/name, "
    "app.kubernetes.io/instance, app.kubernetes.io/component, app.kubernetes.io/part-of, "
    "app.kubernetes.io/managed-by: the operator sets them on every pod and selects the job's "
    "pods by them (use another key)"
)
RESERVED_ENV_LINE = (
    "spec.pods.env: must not set RLKD_* nor AWS_ENDPOINT_URL, "
    "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING, AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_EC2_METADATA_DISABLED, VLLM_SERVER_DEV_MODE, HF_HOME, HF_TOKEN, "
    "HOME, USER: the operator sets them on every pod (remove them, or use another name)"
)


@pytest.mark.parametrize(
    ("pods", "problem"),
    [
        ({"labels": {"rlkd.ai/job": "other"}}, RESERVED_LABEL_LINE),
        ({"labels": {"app.kubernetes.io/component": "x"}}, RESERVED_LABEL_LINE),
        ({"env": [{"name": "RLKD_JOB_FILE", "value": "/x"}]}, RESERVED_ENV_LINE),
        ({"env": [{"name": "RLKD_STORE_ENDPOINT"}]}, RESERVED_ENV_LINE),
        ({"env": [{"name": "HF_TOKEN", "value": "x"}]}, RESERVED_ENV_LINE),
    ],
)
def test_what_the_operator_sets_itself_is_refused_by_the_spec(
    pods: dict[str, Any], problem: str
) -> None:
    """A spec rule (so `rlkd validate` and the API server refuse it too, not only a build)."""
    with pytest.raises(SpecError) as error:
        make_job({"pods": pods})
    assert error.value.problems == [problem]


def test_the_operators_defaults_cannot_set_them_either() -> None:
    with pytest.raises(ValidationError, match="must not set RLKD_"):
        PodSettings(env=[{"name": "RLKD_STORE_BUCKET", "value": "x"}])
    with pytest.raises(ValidationError, match=r"must not set rlkd\.ai/"):
        OperatorDefaults(storage=STORE, pods=PodSettings(labels={"rlkd.ai/role": "x"}))


def test_the_reserved_names_cover_everything_the_builders_set() -> None:
    """Drift guard: a label or variable a builder adds is one `pods` may not set."""
    job = make_job({**EVERY_ROLE, "hub": {"cacheClaim": "c", "tokenSecret": "t"}})
    children = build_children(job, DEFAULTS)
    for where, template in templates(children).items():
        for key in template["metadata"]["labels"]:
            assert key.startswith(RESERVED_LABEL_PREFIX) or key in RESERVED_LABELS, (where, key)
        for name in env_of(template["spec"]["containers"][0]):
            assert name in BUILDER_ENV or name.startswith(BUILDER_ENV_PREFIX), (where, name)


def test_the_spec_refuses_duplicate_env_names() -> None:
    env = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    with pytest.raises(SpecError, match=r"spec.pods.env: names must be unique"):
        make_job({"pods": {"env": env}})


# --- operator defaults from the environment ----------------------------------------------------


def test_operator_defaults_come_from_the_environment() -> None:
    defaults = OperatorDefaults.from_env(
        {
            "RLKD_POD_SERVICE_ACCOUNT_NAME": "rlkd-workloads",
            "RLKD_POD_IMAGE_PULL_SECRETS": "mirror, registry",
            "RLKD_POD_LABELS": '{"team": "ml"}',
            "RLKD_POD_ANNOTATIONS": '{"sidecar.istio.io/inject": "false"}',
            "RLKD_POD_ENV": '{"NCCL_DEBUG": "WARN"}',
            "RLKD_POD_SECURITY": "none",
            "RLKD_HUB_CACHE_CLAIM": "hf-cache",
            "RLKD_HUB_TOKEN_SECRET": "hf-token",
            "RLKD_MONITORING_NAMESPACE": "monitoring",
        }
    )
    assert defaults.pods == PodSettings(
        service_account_name="rlkd-workloads",
        image_pull_secrets=["mirror", "registry"],
        labels={"team": "ml"},
        annotations={"sidecar.istio.io/inject": "false"},
        env=[{"name": "NCCL_DEBUG", "value": "WARN"}],
        security="none",
    )
    assert defaults.hub == HubSpec(cache_claim="hf-cache", token_secret="hf-token")
    assert defaults.network.monitoring_namespace == "monitoring"
    empty = OperatorDefaults.from_env({})
    assert (empty.pods, empty.hub) == (PodSettings(), HubSpec())


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"RLKD_POD_LABELS": "team=ml"}, "RLKD_POD_LABELS: must be a JSON object"),
        ({"RLKD_POD_ENV": '["A"]'}, "RLKD_POD_ENV: must be a JSON object"),
        (
            {"RLKD_POD_SERVICE_ACCOUNT_NAME": "Bad_Name"},
            "RLKD_POD_SERVICE_ACCOUNT_NAME: must be a Kubernetes object name",
        ),
        ({"RLKD_POD_SECURITY": "baseline"}, "RLKD_POD_SECURITY: "),
        (
            {"RLKD_POD_LABELS": '{"rlkd.ai/job": "x"}'},
            RESERVED_LABEL_LINE.replace("spec.pods.labels", "RLKD_POD_LABELS"),
        ),
        (
            {"RLKD_POD_ENV": '{"HF_HOME": "/x"}'},
            RESERVED_ENV_LINE.replace("spec.pods.env", "RLKD_POD_ENV"),
        ),
        (
            {"RLKD_POD_ANNOTATIONS": '{"bad key": "x"}'},
            "RLKD_POD_ANNOTATIONS: keys must be Kubernetes qualified names",
        ),
        (
            {"RLKD_GPU_NODE_SELECTOR": '{"zone/": "a"}'},
            "RLKD_GPU_NODE_SELECTOR: keys must be Kubernetes qualified names",
        ),
        (
            {"RLKD_HUB_CACHE_CLAIM": "UPPER"},
            "RLKD_HUB_CACHE_CLAIM: must be a Kubernetes object name",
        ),
    ],
)
def test_a_bad_operator_setting_names_its_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SpecError) as error:
        OperatorDefaults.from_env(env)
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


# --- the hub cache and token ---------------------------------------------------------------------


def test_the_hub_cache_and_token_reach_every_server_and_learner() -> None:
    job = make_job({**EVERY_ROLE, "hub": {"cacheClaim": "hf-cache", "tokenSecret": "hf"}})
    children = build_children(job, DEFAULTS)
    for where, template in templates(children).items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["hf-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}, where
        [container] = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        env = env_of(container)
        assert env["HF_HOME"] == mounts["hf-cache"] == "/var/cache/huggingface", where
        assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}, where
        assert all("HF_TOKEN" not in arg for arg in container.get("args", []))


def test_the_hub_settings_default_to_the_operators_and_the_job_overrides_them() -> None:
    defaults = OperatorDefaults(
        storage=STORE, hub=HubSpec(cache_claim="shared", token_secret="org")
    )
    master = templates(build_children(make_job(), defaults))["PyTorchJob/Master"]["spec"]
    assert {v["name"]: v for v in master["volumes"]}["hf-cache"]["persistentVolumeClaim"] == {
        "claimName": "shared"
    }
    job = make_job({"hub": {"cacheClaim": "mine"}})
    master = templates(build_children(job, defaults))["PyTorchJob/Master"]["spec"]
    assert {v["name"]: v for v in master["volumes"]}["hf-cache"]["persistentVolumeClaim"] == {
        "claimName": "mine"
    }
    env = env_of(master["containers"][0])
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "org", "key": "HF_TOKEN"}}


def test_without_a_cache_nothing_is_mounted() -> None:
    for template in templates(build_children(make_job(), DEFAULTS)).values():
        assert "hf-cache" not in {v["name"] for v in template["spec"]["volumes"]}
        assert not {"HF_HOME", "HF_TOKEN"} & set(env_of(template["spec"]["containers"][0]))


# --- the startup budget ------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "threshold"), [(None, 360), (1800, 180), (3605, 361), (60, 6)])
def test_the_startup_probe_budget_fits_the_startup_timeout(
    seconds: int | None, threshold: int
) -> None:
    vllm = {} if seconds is None else {"startupTimeoutSeconds": seconds}
    children = build_children(make_job({"judge": {"vllm": vllm}}), DEFAULTS)
    probe = children.inference["judge"].deployment["spec"]["template"]["spec"]["containers"][0][
        "startupProbe"
    ]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (
        STARTUP_PERIOD_SECONDS,
        threshold,
    )
    assert probe["periodSeconds"] * probe["failureThreshold"] >= (seconds or 3600)


# --- the NetworkPolicy -------------------------------------------------------------------------


def _selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return selector.items() <= pod_labels.items()


def test_the_network_policy_admits_only_the_jobs_own_pods_to_every_server() -> None:
    children = build_children(make_job(EVERY_ROLE), DEFAULTS)
    policy = children.network_policy
    assert policy is not None and policy["metadata"]["name"] == "demo-inference"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    pods = templates(children)
    for where, template in pods.items():
        selected = _selects(selector, template["metadata"]["labels"])
        assert selected == where.startswith("Deployment"), where
    [own] = policy["spec"]["ingress"]
    assert "ports" not in own  # NCCL's weight transfer picks its ports
    [peer] = own["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    for where, template in pods.items():
        assert _selects(peer["podSelector"]["matchLabels"], template["metadata"]["labels"]), where
    other = make_job(name="other")
    other_pods = templates(build_children(other, DEFAULTS))
    for template in other_pods.values():
        assert not _selects(peer["podSelector"]["matchLabels"], template["metadata"]["labels"])
        assert not _selects(selector, template["metadata"]["labels"])


def test_the_monitoring_namespace_reaches_only_the_metrics_port() -> None:
    job = make_job({"network": {"monitoringNamespace": "monitoring"}})
    policy = build_children(job, DEFAULTS).network_policy
    assert policy is not None
    _, monitoring = policy["spec"]["ingress"]
    assert monitoring == {
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "ports": [{"port": "http", "protocol": "TCP"}],
    }
    defaults = OperatorDefaults(storage=STORE, network=NetworkSpec(monitoring_namespace="prom"))
    policy = build_children(make_job(), defaults).network_policy
    assert policy is not None
    namespaces = [
        peer["namespaceSelector"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    ]
    assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "prom"}}]


def test_a_job_without_servers_gets_no_network_policy() -> None:
    spec = {
        "rewards": {"structure": 0},
        "gsrm": None,
        "judge": None,
        "rollout": {"mode": "transformers"},
    }
    children = build_children(make_job(spec), DEFAULTS)
    assert children.network_policy is None
    assert "NetworkPolicy" not in [c["kind"] for c in children.all()]
