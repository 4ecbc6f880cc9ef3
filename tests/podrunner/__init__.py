"""A local pod runner for the tests: the kubelet and the controllers the Kubernetes emulator
lacks (Deployment, Job, Kubeflow's Training Operator), running rlkd's children as local
processes (runner.PodRunner). What it may rewrite, and nothing else: a server's --host/--port
(every pod listens on 8000; here each needs its own loopback port), the host:port of
RLKD_<ROLE>_URL, mount paths (volumes are directories under a temp root; the store Secret's via
RLKD_STORE_SECRET_DIR), and the Training Operator's master address (127.0.0.1 and a free port)."""

from tests.podrunner.errors import PodError, UnknownImage
from tests.podrunner.images import LocalImage, image_table
from tests.podrunner.runner import PodRunner

__all__ = ["LocalImage", "PodError", "PodRunner", "UnknownImage", "image_table"]
