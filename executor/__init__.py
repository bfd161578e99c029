"""runbook: an incident-runbook executor SREs can trust at 3 a.m.

The package is layered (DESIGN.md section 6): the core (model, loader,
validation, expressions, graph, conductor) decides and never touches a host,
a clock or a disk; the edges (store, audit, credentials, actions) act; the
wiring module is the only place that names concrete adapters; the CLI and the
HTTP server are thin faces over the same functions.
"""

__version__ = "0.1.0"
