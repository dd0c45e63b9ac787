"""The Helm chart as real Helm renders and installs it, for every values variant.

Helm runs through helm-sdkpy under Python >= 3.12 (see conftest.py and render_chart.py): it
lints the chart and installs it, without waiting, into kmock's Kubernetes emulator; these
tests read back what it rendered and created.
"""

from __future__ import annotations

from typing import Any

import pytest

from imageimport.pipeline.memory import memory_bound
from imageimport.pipeline.pool import PULL_SECONDS, STOP_BOUND_SECONDS
from imageimport.queue.nats import DURABLE, STREAM
from imageimport.settings import Settings
from tests.k8s.conftest import NAMESPACE, VARIANTS, Rendered
from tests.k8s.manifests import object_id, validate_object

INSTALLED = [*VARIANTS, "skaffold-kind"]
IMAGE_UID = 10001
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def pod_specs(variant: Rendered) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every workload, hooks included."""
    return [
        (workload, workload["spec"]["template"]["spec"])
        for kind in WORKLOAD_KINDS
        for workload in variant.of_kind(kind, hooks=True)
    ]


def ours(container: dict[str, Any]) -> bool:
    """Runs the project's image (not one of dev mode's PostgreSQL/NATS/MinIO)."""
    return container["image"].split(":")[0] == "imageimport"


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def env_value(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == name:
            return entry.get("value")
    return None


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return found


# -- Helm itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INSTALLED)
def test_helm_lints_and_installs_the_chart(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    lint = variant.result["lint"]
    assert lint["ok"], f"helm lint of variant {name}: {lint}"
    assert variant.result["status"] == "deployed"
    assert variant.result["hooks"], "the migration hook is always part of the release"
    assert {hook["phase"] for hook in variant.result["hooks"]} == {"Succeeded"}


def test_helm_refuses_values_the_schema_forbids(helm_render: dict[str, Any]) -> None:
    invalid = helm_render["variants"]["invalid"]
    assert invalid["error"] and "/api/port" in invalid["error"], invalid["error"]
    assert not invalid["lint"]["ok"]


@pytest.mark.parametrize("name", INSTALLED)
def test_every_object_is_valid_for_kubernetes(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    for obj in variant.everything:
        validate_object(obj)  # raises with the path of the first bad field


@pytest.mark.parametrize("name", INSTALLED)
def test_helm_created_every_rendered_object(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    created = {
        (c["kind"], c["namespace"], c["name"]): c["deleted"] for c in variant.result["created"]
    }
    for obj in variant.objects:
        namespace = obj["metadata"].get("namespace", variant.result["namespace"])
        if obj["kind"] in ("Namespace",):
            namespace = None
        assert created.get((obj["kind"], namespace, obj["metadata"]["name"])) is False, (
            f"{variant.describe(obj)} was rendered but not created"
        )
    for hook in variant.result["hooks"]:
        key = (hook["kind"], variant.result["namespace"], hook["name"])
        # Hooks ran and, being successful, were deleted by their hook-succeeded policy.
        assert created.get(key) is True, f"{name}: hook {hook['name']} did not run"
    assert variant.result["crd_files"] == ["crds/imageimports.yaml", "crds/kopfpeerings.yaml"]
    for crd in ("imageimports.imageimport.dev", "kopfpeerings.kopf.dev"):
        assert created.get(("CustomResourceDefinition", None, crd)) is False


# -- pods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INSTALLED)
def test_every_pod_runs_locked_down(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    for workload, pod in pod_specs(variant):
        where = variant.describe(workload)
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in pod.get("initContainers", []) + pod["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if c in pod["containers"]:
                # The only writable path: an emptyDir at /tmp.
                volume = mounts.get("/tmp")
                assert volume, f"{where}: {c['name']} has no /tmp volume"
                (spec,) = [v for v in pod["volumes"] if v["name"] == volume]
                assert "emptyDir" in spec, where
            if ours(c):
                assert security["runAsUser"] == IMAGE_UID, where
                assert context["runAsUser"] == IMAGE_UID, where
        if workload["kind"] == "Job":
            assert pod.get("automountServiceAccountToken") is False, where


@pytest.mark.parametrize("name", INSTALLED)
def test_probes_point_at_the_health_endpoints(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    api = variant.get("Deployment", variant.name_of("api"))
    api_container = container(api, "api")
    port = port_number(api_container, "http")
    assert api_container["args"] == ["api", "--host", "0.0.0.0", "--port", str(port)]
    assert api_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api_container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api_container["startupProbe"]["httpGet"]["path"] == "/healthz"

    for component in ("worker", "operator"):
        deployment = variant.get("Deployment", variant.name_of(component))
        c = container(deployment, component)
        health_port = int(env_value(c, "HEALTH_PORT") or 0)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["path"] == "/healthz", f"{component} {probe}"
                assert port_number(c, c[probe]["httpGet"]["port"]) == health_port
    worker = container(variant.get("Deployment", variant.name_of("worker")), "worker")
    assert worker["args"][0] == "worker"
    assert "readinessProbe" in worker and "livenessProbe" in worker


@pytest.mark.parametrize("name", INSTALLED)
def test_the_worker_stops_within_its_pods_grace(name: str, rendered: dict[str, Rendered]) -> None:
    """After SIGTERM the worker takes SHUTDOWN_GRACE_SECONDS + its stop bound and last pull,
    then closes NATS (up to ~20 s if it hangs): all before Kubernetes kills the pod."""
    variant = rendered[name]
    deployment = variant.get("Deployment", variant.name_of("worker"))
    pod_grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    grace = float(env_value(container(deployment, "worker"), "SHUTDOWN_GRACE_SECONDS") or -1)
    assert grace >= 0 and grace + STOP_BOUND_SECONDS + PULL_SECONDS + 1 + 20 <= pod_grace


# -- wiring --------------------------------------------------------------------------------------


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", INSTALLED)
def test_references_between_objects_resolve(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    deployments = variant.of_kind("Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _selects(selector, deployment), variant.describe(deployment)
        others = [d for d in deployments if d is not deployment and _selects(selector, d)]
        assert not others, f"{variant.describe(deployment)}'s selector also picks {others}"
    for service in variant.of_kind("Service"):
        targets = [d for d in deployments if _selects(service["spec"]["selector"], d)]
        assert len(targets) == 1, variant.describe(service)
        ports = {
            p["name"]
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, variant.describe(service)
    for pdb in variant.of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert len([d for d in deployments if _selects(selector, d)]) == 1, variant.describe(pdb)
    for scaler in variant.of_kind("HorizontalPodAutoscaler") + variant.of_kind("ScaledObject"):
        target = scaler["spec"]["scaleTargetRef"]
        assert variant.has("Deployment", target["name"]), variant.describe(scaler)
    accounts = {sa["metadata"]["name"] for sa in variant.of_kind("ServiceAccount")}
    for workload, pod in pod_specs(variant):
        account = pod.get("serviceAccountName")
        if workload["kind"] == "Job":
            assert account is None, "hooks run before the chart's ServiceAccounts exist"
        elif ours(pod["containers"][0]):
            assert account in accounts, variant.describe(workload)
    roles = {
        (r["metadata"].get("namespace"), r["metadata"]["name"]) for r in variant.of_kind("Role")
    }
    for binding in variant.of_kind("RoleBinding"):
        assert (binding["metadata"].get("namespace"), binding["roleRef"]["name"]) in roles
        for subject in binding["subjects"]:
            assert (
                subject["name"] in accounts and subject["namespace"] == variant.result["namespace"]
            )


@pytest.mark.parametrize("name", INSTALLED)
def test_pods_get_their_settings_from_objects_that_exist(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    existing_secret = VARIANTS.get(name, {}).get("existingSecret")
    hooks = {h["name"]: h for h in variant.result["hooks"]}
    for workload, pod in pod_specs(variant):
        for c in pod.get("initContainers", []) + pod["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert variant.has("ConfigMap", source["configMapRef"]["name"])
                    assert workload["kind"] != "Job", "hooks cannot rely on the release's objects"
                    continue
                secret = source["secretRef"]["name"]
                if secret == existing_secret:
                    continue
                if workload["kind"] == "Job":
                    # A hook's Secret is itself a hook, created first, in the same phases.
                    job = hooks[workload["metadata"]["name"]]
                    assert secret in hooks and hooks[secret]["kind"] == "Secret"
                    assert hooks[secret]["weight"] < job["weight"]
                    assert hooks[secret]["events"] == job["events"]
                else:
                    assert variant.has("Secret", secret), f"{variant.describe(workload)}: {secret}"


SETTINGS_ENV_NAMES = {
    (field.validation_alias if isinstance(field.validation_alias, str) else name).upper()
    for name, field in Settings.model_fields.items()
}


@pytest.mark.parametrize("name", INSTALLED)
def test_every_command_the_chart_runs_is_one_the_cli_accepts(
    name: str, rendered: dict[str, Rendered]
) -> None:
    import typer

    from imageimport.cli import app

    cli: Any = typer.main.get_command(app)  # a group of commands (typer's own click)
    commands = 0
    for workload, spec in pod_specs(rendered[name]):
        for each in [*spec.get("initContainers", []), *spec["containers"]]:
            if not ours(each) or "command" in each:
                continue
            args = each.get("args", [])
            where = f"{name}: {workload['metadata']['name']}/{each['name']} {args}"
            with cli.make_context("imageimport", list(args), resilient_parsing=False) as context:
                command_name, command, rest = cli.resolve_command(context, list(args))
                assert command is not None, where
                # Parsing only: a wrong option or value is a usage error (exit code 2).
                try:
                    command.make_context(command_name, rest, parent=context)
                except Exception as error:
                    pytest.fail(f"{where}: {error}")
            commands += 1
    assert commands >= 3  # api, worker, operator at least


@pytest.mark.parametrize("name", INSTALLED)
def test_the_settings_the_chart_sets_are_settings_the_app_accepts(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = rendered[name]
    env = variant.config_env()
    unknown = set(env) - SETTINGS_ENV_NAMES
    assert not unknown, f"{name}: the chart sets variables no setting reads: {unknown}"
    for key in SETTINGS_ENV_NAMES:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # raises on anything the app would refuse
    assert settings.nats_url and settings.nats_url.startswith("nats://")
    assert settings.s3_bucket
    assert str(settings.data_dir).startswith("/tmp")
    if "existingSecret" not in VARIANTS.get(name, {}):
        assert settings.database_url and settings.database_url.startswith("postgresql://")
    expected_mode = VARIANTS.get(name, {}).get("config", {}).get("mode", "kubernetes")
    assert settings.mode == expected_mode


def _memory_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ("2Gi", "1536Mi", "2G", "2147483648") in bytes."""
    factors = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    factors |= {"G": 10**9, "T": 10**12}
    text = str(quantity)
    for suffix, factor in factors.items():
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(float(text))


@pytest.mark.parametrize("name", INSTALLED)
def test_a_workers_memory_bound_is_within_its_memory_limit(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SECURITY.md's bound for one worker (a baseline + DECODE_MEMORY_BYTES + concurrency x
    per-file buffers + ZIP_MAX_OPEN_ARCHIVES x an open Dropbox ZIP's index), computed from what
    the chart gives it, is under its memory limit: what no folder's files contain can get a
    worker killed for memory."""
    variant = rendered[name]
    worker = container(variant.get("Deployment", variant.name_of("worker")), "worker")
    args = worker["args"]
    concurrency = int(args[args.index("--concurrency") + 1])
    own = {entry["name"]: entry["value"] for entry in worker.get("env", []) if "value" in entry}
    assert "DECODE_MEMORY_BYTES" in own
    for key in SETTINGS_ENV_NAMES:
        monkeypatch.delenv(key, raising=False)
    for key, value in (variant.config_env() | own).items():
        if key in SETTINGS_ENV_NAMES:
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    limit = _memory_bytes(worker["resources"]["limits"]["memory"])
    assert memory_bound(settings, concurrency) <= limit, (
        memory_bound(settings, concurrency),
        limit,
    )


@pytest.mark.parametrize("name", ["dev", "dev-keda", "skaffold-kind"])
def test_dev_mode_wires_in_its_own_services(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    env = variant.config_env()
    ns = variant.result["namespace"]
    for service, port, setting, prefix in (
        ("postgresql", 5432, "DATABASE_URL", "postgresql://"),
        ("nats", 4222, "NATS_URL", "nats://"),
        ("minio", 9000, "S3_ENDPOINT_URL", "http://"),
    ):
        service_name = variant.name_of(service)
        svc = variant.get("Service", service_name)
        assert port in {p["port"] for p in svc["spec"]["ports"]}, f"{name}: {service}"
        assert env[setting].startswith(prefix), f"{name}: {setting}={env[setting]}"
        assert f"{service_name}:{port}" in env[setting], f"{name}: {setting}={env[setting]}"
        assert variant.has("Deployment", service_name)
    nats = container(variant.get("Deployment", variant.name_of("nats")), "nats")
    assert "--jetstream" in nats["args"] and "--http_port=8222" in nats["args"]
    monitor = variant.get("Service", variant.name_of("nats"))
    assert {"name": "monitor", "port": 8222, "targetPort": "monitor"} in monitor["spec"]["ports"]
    assert env["S3_ACCESS_KEY_ID"] and env["S3_SECRET_ACCESS_KEY"]
    assert ns == variant.result["namespace"]


@pytest.mark.parametrize("name", ["default", "keda", "options"])
def test_without_dev_mode_no_service_is_deployed_for_you(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    names = {d["metadata"]["name"] for d in variant.of_kind("Deployment")}
    assert names == {variant.name_of(c) for c in ("api", "operator", "worker")}


# -- hooks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INSTALLED)
def test_migrations_run_as_a_hook_before_the_new_version(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    hooks = {h["name"]: h for h in variant.result["hooks"]}
    migrate = hooks[variant.name_of("migrate")]
    dev = "dev" in name or "skaffold" in name
    # Against external services the schema is migrated before anything of the release starts;
    # in dev mode PostgreSQL is part of the release, so the first migration follows the install.
    expected = ["post-install", "pre-upgrade"] if dev else ["pre-install", "pre-upgrade"]
    assert migrate["events"] == expected
    assert "before-hook-creation" in migrate["delete_policies"]
    job = variant.get("Job", variant.name_of("migrate"), hooks=True)
    assert container(job, "migrate")["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    if dev:
        (wait,) = job["spec"]["template"]["spec"]["initContainers"]
        assert "DATABASE_URL" in wait["args"][0]


# -- autoscaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keda", "dev-keda"])
def test_keda_scales_the_workers_on_the_jetstream_backlog(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    worker_name = variant.name_of("worker")
    assert not variant.of_kind("HorizontalPodAutoscaler")
    (scaled,) = variant.of_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker_name
    assert "replicas" not in variant.get("Deployment", worker_name)["spec"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    # The names the workers use (imageimport.queue.nats), and NATS' default account.
    assert (metadata["stream"], metadata["consumer"], metadata["account"]) == (
        STREAM,
        DURABLE,
        "$G",
    )
    # KEDA's operator runs in its own namespace: the endpoint must name ours.
    host, _, port = metadata["natsServerMonitoringEndpoint"].partition(":")
    assert host.endswith(f".{NAMESPACE}.svc.cluster.local") and port == "8222"
    if name == "dev-keda":
        assert host.split(".")[0] == variant.name_of("nats")
    assert int(metadata["lagThreshold"]) > 0
    # The durable consumer the scaler reads exists before the ScaledObject does.
    hooks = {h["name"]: h for h in variant.result["hooks"]}
    setup = hooks[variant.name_of("queue-setup")]
    assert setup["weight"] > hooks[variant.name_of("migrate")]["weight"]
    if name == "keda":
        assert setup["events"][0] == "pre-install"
    job = variant.get("Job", variant.name_of("queue-setup"), hooks=True)
    assert container(job, "queue-setup")["args"] == ["queue-setup"]


@pytest.mark.parametrize("name", ["default", "dev"])
def test_without_keda_the_workers_scale_on_cpu(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    assert not variant.of_kind("ScaledObject")
    assert variant.name_of("queue-setup") not in {h["name"] for h in variant.result["hooks"]}
    (hpa,) = variant.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["scaleTargetRef"]["name"] == variant.name_of("worker")


# -- RBAC ----------------------------------------------------------------------------------------

OPERATOR_RULES = {
    ("imageimport.dev", "imageimports"): {"get", "list", "watch", "patch", "update"},
    ("imageimport.dev", "imageimports/status"): {"get", "patch", "update"},
    ("imageimport.dev", "imageimports/finalizers"): {"update"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"get"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


@pytest.mark.parametrize("name", INSTALLED)
def test_rbac_is_the_minimum_each_component_needs(name: str, rendered: dict[str, Rendered]) -> None:
    variant = rendered[name]
    assert not variant.of_kind("ClusterRole") and not variant.of_kind("ClusterRoleBinding")
    values = VARIANTS.get(name, {})
    watched = values.get("operator", {}).get("watchNamespaces") or [variant.result["namespace"]]
    peering = values.get("operator", {}).get("peering", {}).get("enabled", True)
    operator_roles = [
        r for r in variant.of_kind("Role") if r["metadata"]["name"] == variant.name_of("operator")
    ]
    assert sorted(r["metadata"]["namespace"] for r in operator_roles) == sorted(watched)
    expected = dict(OPERATOR_RULES)
    if not peering:
        del expected[("kopf.dev", "kopfpeerings")]
    for role in operator_roles:
        assert rules_of(role) == expected, object_id(role)
    api_roles = [
        r for r in variant.of_kind("Role") if r["metadata"]["name"] == variant.name_of("api")
    ]
    if values.get("config", {}).get("mode", "kubernetes") == "kubernetes":
        (api_role,) = api_roles
        assert rules_of(api_role) == {
            ("imageimport.dev", "imageimports"): {"create", "get", "list"}
        }
    else:
        assert not api_roles
    # Workers read only the Secrets ImageImports name, and only when the operator runs.
    worker_account = variant.get("ServiceAccount", variant.name_of("worker"))
    operator_on = values.get("operator", {}).get("enabled", True)
    assert worker_account["automountServiceAccountToken"] is operator_on
    worker_roles = [
        r for r in variant.of_kind("Role") if r["metadata"]["name"] == variant.name_of("worker")
    ]
    assert len(worker_roles) == (len(operator_roles) if operator_on else 0)
    for role in worker_roles:
        assert rules_of(role) == {("", "secrets"): {"get"}}


@pytest.mark.parametrize("name", INSTALLED)
def test_the_operator_runs_with_peering_in_its_namespaces(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    values = VARIANTS.get(name, {})
    watched = values.get("operator", {}).get("watchNamespaces") or [variant.result["namespace"]]
    peering = values.get("operator", {}).get("peering", {}).get("enabled", True)
    operator = variant.get("Deployment", variant.name_of("operator"))
    args = container(operator, "operator")["args"]
    assert args[0] == "operator"
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={n}" for n in watched
    ]
    peerings = variant.of_kind("KopfPeering")
    if peering:
        assert f"--peering={variant.fullname}" in args
        assert "--peering-lifetime=60" in args
        assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(watched)
        assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    else:
        assert "--standalone" in args and not peerings
        # Without peering, two operators must never overlap, not even during a rollout.
        assert operator["spec"]["strategy"]["type"] == "Recreate"


# -- optional parts ------------------------------------------------------------------------------


def test_optional_parts_render_when_asked_for(rendered: dict[str, Rendered]) -> None:
    variant = rendered["options"]
    api_name = variant.name_of("api")
    # existingSecret: the chart keeps no secret of its own and every pod reads the user's.
    assert not variant.of_kind("Secret", hooks=True)
    for _, pod in pod_specs(variant):
        refs = [
            s["secretRef"]["name"]
            for c in pod["containers"]
            for s in c.get("envFrom", [])
            if "secretRef" in s
        ]
        assert refs == ["imageimport-secrets"]
    (ingress,) = variant.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "images.example"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": api_name,
        "port": {"name": "http"},
    }
    assert ingress["spec"]["ingressClassName"] == "nginx"
    service = variant.get("Service", api_name)
    assert (
        service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30080
    )
    worker = variant.get("Deployment", variant.name_of("worker"))
    assert worker["spec"]["replicas"] == 3 and not variant.of_kind("HorizontalPodAutoscaler")
    env = variant.config_env()
    assert env["CORS_ORIGINS"] == '["https://photos.example"]'
    assert env["SOURCE_RETRY_ATTEMPTS"] == "8" and env["S3_PREFIX"] == "imports/"


@pytest.mark.parametrize("name", INSTALLED)
def test_notes_tell_how_to_reach_the_api_and_follow_an_import(
    name: str, rendered: dict[str, Rendered]
) -> None:
    variant = rendered[name]
    notes = variant.result["notes"]
    ns = variant.result["namespace"]
    service = variant.get("Service", variant.name_of("api"))
    if service["spec"]["type"] == "NodePort":
        assert (
            f"NodePort {service['spec']['ports'][0]['nodePort']}" in notes
            or "images.example" in notes
        )
    else:
        port = service["spec"]["ports"][0]["port"]
        assert f"kubectl -n {ns} port-forward svc/{variant.name_of('api')} 8000:{port}" in notes
    assert f"kubectl -n {ns} get imgimp -w" in notes
    assert "kind: ImageImport" in notes and "apiVersion: imageimport.dev/v1alpha1" in notes
    if "dev" in name or "skaffold" in name:
        assert "DEV MODE" in notes
    else:
        assert "DEV MODE" not in notes
