"""Proxy mode: an HTTPS ``CONNECT`` proxy for the clients that hard-code IBM's host names.

Clients before 0.49 always exchange their key at ``https://iam.cloud.ibm.com`` and derive the
search, catalog and runtime hosts from IBM's domain, so no URL setting reaches this server.
They do honour ``HTTPS_PROXY`` and ``REQUESTS_CA_BUNDLE`` (``requests``), so the server can
stand in for IBM's hosts: :mod:`.hosts` names the hosts, :mod:`.ca` issues their certificate
from a name-constrained CA of our own, and :mod:`.tunnel` terminates TLS and hands each
request to the local API. Clients on the system certificate store (QRMI's rustls) read
``SSL_CERT_FILE`` instead of ``REQUESTS_CA_BUNDLE``; the printed recipe sets both to the bundle.
"""
