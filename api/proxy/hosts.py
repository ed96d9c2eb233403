"""The IBM Cloud host names proxy mode stands in for, and nothing else.

Mirrors the hosts qiskit-ibm-runtime 0.40-0.48 contacts with its default configuration
(docs/protocol.md §1.4): the IAM token exchange, Global Search, Global Catalog and the regional
Qiskit Runtime API hosts of both channels (``ibm_cloud``: ``{region}.quantum-computing.cloud.ibm.com``;
``ibm_quantum_platform``: ``quantum.cloud.ibm.com`` and ``{region}.quantum.cloud.ibm.com``).
The CA's name constraints and the leaf certificate's names are this list, so trusting the
CA can never vouch for another site.
"""

from __future__ import annotations

IAM_HOST = "iam.cloud.ibm.com"
SEARCH_HOST = "api.global-search-tagging.cloud.ibm.com"
CATALOG_HOST = "globalcatalog.cloud.ibm.com"
# IBM Quantum Platform's two regions (instance CRNs name one of them).
REGIONS = ("us-east", "eu-de")

PROXIED_HOSTS: tuple[str, ...] = (
    IAM_HOST,
    SEARCH_HOST,
    CATALOG_HOST,
    "quantum.cloud.ibm.com",
    *(f"{region}.quantum.cloud.ibm.com" for region in REGIONS),
    *(f"{region}.quantum-computing.cloud.ibm.com" for region in REGIONS),
)

HTTPS_PORT = 443


def is_proxied(host: str, port: int) -> bool:
    """True if a ``CONNECT host:port`` is one proxy mode serves: a listed host (any case) on 443."""
    return port == HTTPS_PORT and host.lower().rstrip(".") in PROXIED_HOSTS


def local_path(host: str, path: str) -> str:
    """The path on this server that serves ``path`` of IBM's ``host``.

    Global Catalog answers under ``/api/v1/{id}``, the runtime API's own prefix, so its
    requests move to ``/catalog/{id}``; every other host keeps its path (``/identity/token``,
    ``/v3/resources/search`` and ``/api/v1/...`` are served as they are).
    """
    if host.lower().split(":", 1)[0].rstrip(".") == CATALOG_HOST and path.startswith("/api/v1/"):
        return "/catalog/" + path[len("/api/v1/") :]
    return path
