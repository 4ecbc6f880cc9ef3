"""The `restricted` Pod Security Standard (Kubernetes 1.30+, policy version "latest"), checked
offline on a pod spec: the controls of
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Baseline and Restricted),
each as the admission controller reads it. No cluster runs here (TESTING.md), so this stands in
for `pod-security.kubernetes.io/enforce: restricted`; it is the standard's text, not our code.
"""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """Every way the pod spec `pod` breaks the restricted level, as 'field: problem' lines
    (empty when it passes)."""
    problems: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"spec.{field}: must be unset or false")
    problems += _selinux("spec.securityContext", pod_sc)
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls: {sysctl.get('name')} is not safe")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("spec.securityContext.windowsOptions.hostProcess: must be false")
    if pod_sc.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser: must not be 0")
    if pod_sc.get("runAsNonRoot") is False:
        problems.append("spec.securityContext.runAsNonRoot: must not be false")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_ALLOWED:
        problems.append(f"spec.securityContext.seccompProfile.type: {pod_seccomp} is not allowed")
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("spec.securityContext.appArmorProfile.type: must not be Unconfined")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"spec.volumes[{volume['name']}]: {sorted(kinds)} is not allowed")
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(group) or []:
            where = f"spec.{group}[{container['name']}]"
            problems += _container(where, container, pod_sc)
    return problems


def _container(where: str, container: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    problems = []
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged: must be false")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{where}.securityContext.windowsOptions.hostProcess: must be false")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{where}.ports: hostPort must be unset or 0")
    if sc.get("procMount") not in (None, "Default"):
        problems.append(f"{where}.securityContext.procMount: must be Default")
    problems += _selinux(f"{where}.securityContext", sc)
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where}.securityContext.appArmorProfile.type: must not be Unconfined")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        problems.append(f"{where}.securityContext.runAsNonRoot: must be true (here or in the pod)")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}.securityContext.runAsUser: must not be 0")
    seccomp = (sc.get("seccompProfile") or {}).get("type") or (
        pod_sc.get("seccompProfile") or {}
    ).get("type")
    if seccomp not in SECCOMP_ALLOWED:
        problems.append(
            f"{where}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost "
            "(here or in the pod)"
        )
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"{where}.securityContext.capabilities.drop: must include ALL")
    added = set(capabilities.get("add") or [])
    if added - {"NET_BIND_SERVICE"}:
        problems.append(f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE")
    if added - BASELINE_CAPABILITIES:
        problems.append(f"{where}.securityContext.capabilities.add: beyond baseline")
    return problems


def _selinux(where: str, sc: dict[str, Any]) -> list[str]:
    options = sc.get("seLinuxOptions") or {}
    problems = []
    if options.get("type", "") not in SELINUX_TYPES:
        problems.append(f"{where}.seLinuxOptions.type: {options['type']} is not allowed")
    if options.get("user") or options.get("role"):
        problems.append(f"{where}.seLinuxOptions: user and role must be unset")
    return problems
