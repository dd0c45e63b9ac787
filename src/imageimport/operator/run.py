"""`imageimport operator`: Kopf serving ImageImport resources, with the database, the queue
and the importer it needs."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from imageimport import db
from imageimport.errors import ConfigError
from imageimport.kube.cluster import current_namespace
from imageimport.services.stack import services_when_up
from imageimport.services.waiting import StopFlag
from imageimport.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    peering: str | None = None  # a KopfPeering name; None: Kopf's default ("default", if any)
    standalone: bool = False
    priority: int | None = None
    peering_lifetime: int = 60  # seconds; Kopf's default


def check_settings(settings: Settings) -> None:
    """The operator lists folders for workers in other pods: it needs what they share."""
    if not settings.nats_url:
        raise ConfigError(
            "The operator needs NATS_URL: it publishes each file for `imageimport worker` "
            "processes through NATS JetStream."
        )
    if not settings.database_url or db.database_backend(settings.database_url) != "postgresql":
        raise ConfigError(
            "The operator needs DATABASE_URL to name a PostgreSQL database: the API, the "
            "workers and the operator run in different pods and must share it (SQLite cannot "
            "be shared)."
        )


def watched_namespaces(options: OperatorOptions) -> tuple[str, ...]:
    if options.all_namespaces and options.namespaces:
        raise ConfigError("Give either --namespace or --all-namespaces, not both.")
    if options.standalone and options.peering:
        raise ConfigError("--standalone turns peering off; it cannot go with --peering.")
    if options.all_namespaces:
        return ()
    if options.namespaces:
        return options.namespaces
    own = current_namespace()
    if own is None:
        raise ConfigError(
            "Which namespaces should the operator serve? Give --namespace NS (repeatable) or "
            "--all-namespaces (outside a pod there is no namespace of its own to default to)."
        )
    return (own,)


def run_operator(settings: Settings, options: OperatorOptions) -> None:
    """Run until SIGTERM/SIGINT. ConfigError for settings or options that cannot work."""
    import kopf

    from imageimport.operator.handlers import OperatorContext, make_registry, make_settings

    check_settings(settings)
    namespaces = watched_namespaces(options)
    priority = options.priority
    if priority is None and not options.standalone:
        # Replicas with equal priorities all pause; distinct ones let exactly one work.
        priority = random.randint(1, 1_000_000)
    # PostgreSQL and NATS may come up after the operator (dev mode, a fresh cluster): wait,
    # saying why, rather than crash-loop; Kopf's own signal handling starts with kopf.run.
    services = services_when_up(settings, StopFlag().on_signals())
    if services is None:
        return
    with services:
        context = OperatorContext(services.runtime, services.importer)
        log.info(
            "serving ImageImports in %s",
            ", ".join(namespaces) if namespaces else "all namespaces",
        )
        kopf_settings = make_settings()
        kopf_settings.peering.lifetime = options.peering_lifetime
        kopf.run(
            registry=make_registry(),
            settings=kopf_settings,
            standalone=options.standalone or None,
            peering_name=options.peering,
            priority=priority,
            namespaces=namespaces,
            clusterwide=options.all_namespaces,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            memo=kopf.Memo(context=context),
        )
