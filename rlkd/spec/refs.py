"""Names and references that appear in many places of the spec, each checked by one pattern.

Patterns stay inside the regex subset shared by Python, Rust (pydantic) and RE2 (the API server),
so the CRD enforces exactly what `rlkd validate` enforces.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

# A bucket name by the S3 rules: 3-63 characters of lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit; no "..", not an IP address (rules of the storage
# spec). `s3_bucket_problems` names each broken rule, for messages and for the store itself.
S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_BUCKET_CHARS = re.compile(r"[a-z0-9.-]*")
# [.] rather than \. : the pattern is also embedded in a CEL string, where \. is no escape.
BUCKET_IP_PATTERN = r"^[0-9]+([.][0-9]+){3}$"


def s3_bucket_problems(name: str) -> list[str]:
    """Every way `name` breaks the S3 bucket naming rules (empty when it is valid)."""
    problems = []
    if not 3 <= len(name) <= 63:
        problems.append(f"must be 3 to 63 characters long, not {len(name)}")
    if not _BUCKET_CHARS.fullmatch(name):
        problems.append("may hold only lowercase letters, digits, dots and hyphens")
    if name and not (name[0].isalnum() and name[-1].isalnum()):
        problems.append("must start and end with a lowercase letter or a digit")
    if ".." in name:
        problems.append("must not contain two adjacent dots")
    if re.fullmatch(BUCKET_IP_PATTERN, name):
        problems.append("must not be formatted as an IP address")
    return problems


S3Bucket = Annotated[str, Field(pattern=S3_BUCKET_PATTERN, max_length=63)]

# Where a model or dataset lives. One of:
#   s3://bucket/key          an object prefix in any S3-compatible store
#   store://path/in/store    a path inside this job's artifact store (spec.storage)
#   /absolute/path           a path inside the container (baked into the image or a mounted volume)
#   org/name or name         a Hugging Face Hub id, for clusters that can reach the Hub
#   toy://name               the shipped toy domain (rlkd.toy), built on first use
S3_SCHEME = "s3://"
STORE_SCHEME = "store://"
TOY_SCHEME = "toy://"


def _segment(chars: str) -> str:
    """A path segment of `chars` and dots with at least one non-dot: no "." or ".." segments
    (the store refuses them as keys)."""
    return f"[.{chars}]*[{chars}][.{chars}]*"


_SEGMENT = _segment("A-Za-z0-9_~=+@-")
_KEY = _SEGMENT + r"(/" + _SEGMENT + r")*/?"
REF_PATTERN = (
    rf"^({S3_SCHEME}[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]/"
    + _KEY
    + rf"|{STORE_SCHEME}"
    + _KEY
    + r"|/"
    + _KEY
    + rf"|{TOY_SCHEME}[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    + r"|[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)$"
)
REF_FORMS = (
    "s3://bucket/path, store://path (in the job's store), /absolute/path, a hub id org/name, or"
    " toy://name (the shipped toy domain); no '.' or '..' segments"
)
Ref = Annotated[str, Field(pattern=REF_PATTERN, min_length=1, max_length=1024)]

# The RLKDJob's own name. Children are named after it (the PyTorchJob exactly, Services
# `<name>-<role>`), and PyTorchJob and Service names must be DNS-1035 labels of at most 63
# characters: so it is a DNS-1123 label that starts with a letter and leaves room for a suffix.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 45
JobName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)]

# The storage prefix: key segments, no leading or trailing '/'.
_PREFIX_SEGMENT = _segment("A-Za-z0-9_-")
STORE_PREFIX_PATTERN = r"^(" + _PREFIX_SEGMENT + r"(/" + _PREFIX_SEGMENT + r")*)?$"
StorePrefix = Annotated[str, Field(pattern=STORE_PREFIX_PATTERN, max_length=512)]

# Kubernetes object names that the spec refers to (Secrets) are DNS-1123 subdomains.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]

# Names that are also label values (a Kueue LocalQueue, named by a label): DNS-1123 labels.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LabelName = Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)]

# Kubernetes resource quantities, e.g. "8", "500m", "64Gi".
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]

# A label value: at most 63 characters, alphanumeric at both ends ('' too).
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
# A label, annotation or nodeSelector key: a Kubernetes qualified name, an optional DNS-subdomain
# prefix and '/', then a name of at most 63 characters. The prefix's own bound (253 characters) is
# LONG_KEY_PREFIX_PATTERN: a regex cannot say both. [.] rather than \. : both are embedded in CEL
# rules (a structural schema has no propertyNames), which check every key of a map.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LONG_KEY_PREFIX_PATTERN = r"^[^/]{254,}/"
QUALIFIED_NAME_HINT = (
    "keys must be Kubernetes qualified names: an optional DNS subdomain prefix (at most 253 "
    "lowercase letters, digits, '-' and '.') and '/', then a name of at most 63 letters, digits, "
    "'-', '_' and '.' that starts and ends with a letter or digit, e.g. example.com/team"
)
MAX_MAP_KEYS = 64
"""Keys of each label, annotation and nodeSelector map: bounds the API server's cost estimate of
the rule that checks them."""


def qualified_name(key: str) -> bool:
    """Whether `key` may be a label, annotation or nodeSelector key."""
    return bool(re.fullmatch(QUALIFIED_NAME_PATTERN, key)) and not re.match(
        LONG_KEY_PREFIX_PATTERN, key
    )


# An environment variable name (what a shell can export).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# The S3 endpoint: scheme and host (and port), no path.
ENDPOINT_PATTERN = r"^https?://[^\s/]+/?$"
Endpoint = Annotated[str, Field(pattern=ENDPOINT_PATTERN, max_length=512)]

# An OpenAI-compatible server's base URL, path allowed (usually /v1).
URL_PATTERN = r"^https?://[^\s/]+(/\S*)?$"
URL = Annotated[str, Field(pattern=URL_PATTERN, max_length=512)]

# What to say when a value does not match one of the patterns above.
PATTERN_HINTS = {
    REF_PATTERN: f"must be a model or dataset reference: {REF_FORMS}",
    ENDPOINT_PATTERN: "must be an http:// or https:// URL without a path, "
    "e.g. http://minio.rlkd-system:9000",
    URL_PATTERN: "must be an http:// or https:// URL, e.g. http://judge.llm:8000/v1",
    DNS1123_SUBDOMAIN: "must be a Kubernetes object name: lowercase letters, digits, '-' and '.'",
    DNS1123_LABEL: "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit",
    STORE_PREFIX_PATTERN: "must be '' or path segments of letters, digits, '.', '_' and '-' joined"
    " by '/', without '.' or '..' segments, e.g. rlkd/team-a",
    LABEL_VALUE_PATTERN: "must be a label value: at most 63 letters, digits, '-', '_' and '.',"
    " starting and ending with a letter or digit",
    QUANTITY_PATTERN: "must be a Kubernetes quantity, e.g. 8, 500m or 64Gi",
    NAME_PATTERN: "must be a DNS-1123 label that starts with a letter: lowercase letters, digits"
    " and '-' (it names the PyTorchJob and the Services)",
}
