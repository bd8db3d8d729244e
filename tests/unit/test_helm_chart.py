"""The Helm chart (charts/conveyor), rendered by Helm's own template engine.

helm-python-sdk binds Helm's Go SDK (no helm binary, no cluster: ``lookup`` finds
nothing, as in ``helm template``), so what is checked here is what ``helm install``
would send. Every object is then checked against Kubernetes' own JSON schemas
(kubernetes-validate, strict: an unknown or misplaced field is an error).
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from conveyor.orchestrator.settings import Settings
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
QUEUES = ("control", "sandbox", "scan", "deploy")
DATABASE_URL = "postgresql://conveyor:pw@db.example:5432/conveyor"
BROKER_URL = "redis://redis.example:6379/0"
#: One artifact store every worker pod reaches, so a run's workspace can go between them.
S3: dict[str, Any] = {"CONVEYOR_ARTIFACT_STORE": "s3", "CONVEYOR_S3_BUCKET": "artifacts"}
#: The least a user must give: Conveyor bundles neither Postgres nor a broker, and workers
#: on several pods need a store they all reach (or a shared claim).
REQUIRED: dict[str, Any] = {
    "database": {"url": DATABASE_URL},
    "broker": {"url": BROKER_URL},
    "config": S3,
}
#: The Kubernetes version whose schemas the manifests are checked against.
KUBE_VERSION = "1.37"
#: Kinds that come from CRDs, which kubernetes-validate has no schema for (KEDA's are
#: checked in test_chart_keda.py).
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication"}
RELEASE, NAMESPACE = "ci", "builds"
SECRET_ENV = {"CONVEYOR_DATABASE_URL", "CONVEYOR_BROKER_URL", "CONVEYOR_SECRET_KEY"}


def helm() -> Any:
    """The helm_python module, or a skip (a failure under CI) without it."""
    try:
        import helm_python
    except ImportError as exc:
        missing("helm-python-sdk", f"{exc} (pip install -e '.[dev]')")
    return helm_python


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, key by key (as Helm's -f does)."""
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@dataclass
class Rendered:
    """The objects of one render, and its NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of this kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of this kind and (full) name."""
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in self.kind(kind)]}"
        return found[0]

    def deployment(self, component: str) -> dict[str, Any]:
        """The Deployment of a component: api, beat, flower, worker-<pool>."""
        return self.get("Deployment", f"{RELEASE}-conveyor-{component}")

    def pods(self) -> list[dict[str, Any]]:
        """The pod spec of every Deployment and Job."""
        return [o["spec"]["template"]["spec"] for o in self.kind("Deployment") + self.kind("Job")]

    def secret_data(self, name: str) -> dict[str, str]:
        """A Secret's data, decoded."""
        data = self.get("Secret", name)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def render(values: dict[str, Any] | None = None, *, required: bool = True) -> Rendered:
    """The chart rendered as release "ci" in namespace "builds", with ``values``."""
    lib = helm()
    given = merged(REQUIRED if required else {}, values or {})
    chart = lib.Chart.load(str(CHART))
    try:
        files = chart.render(given, name=RELEASE, namespace=NAMESPACE)
    finally:
        chart.close()
    objects = [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    notes = next((t for p, t in files.items() if p.endswith("NOTES.txt")), "")
    return Rendered(objects, notes)


def refused(values: dict[str, Any], *, required: bool = True) -> str:
    """The error Helm gives for ``values``, which must not render."""
    lib = helm()
    with pytest.raises(lib.HelmError) as caught:
        render(values, required=required)
    return str(caught.value)


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod, init containers (sidecars) included."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """One container of a Deployment's pod."""
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in containers(pod) if c["name"] == name)


def main(workload: dict[str, Any]) -> dict[str, Any]:
    """The first (Conveyor's) container of a Deployment or Job."""
    first: dict[str, Any] = workload["spec"]["template"]["spec"]["containers"][0]
    return first


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {e["name"]: e for e in c.get("env", [])}


def mounts(c: dict[str, Any]) -> dict[str, str]:
    """A container's volume mounts: volume name -> path."""
    return {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}


# -- the whole chart ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "workers": {
                "sandbox": {"docker": {"enabled": True}},
                "scan": {
                    "docker": {"enabled": True},
                    "autoscaling": {"enabled": True},
                    "keda": {"enabled": False},
                },
            },
            "dind": {"resources": {"requests": {"cpu": "500m"}}, "nativeSidecar": False},
            "flower": {"enabled": False},
            "api": {"ingress": {"enabled": True, "tls": [{"secretName": "t", "hosts": ["h"]}]}},
            "serviceMonitor": {"enabled": True, "tokenSecret": {"name": "prometheus-token"}},
            "dataVolume": {"existingClaim": "conveyor-data"},
            "workspaces": {"sharedClaim": "conveyor-workspaces"},
            "autoscaling": {"keda": {"enabled": True}},
            "config": {"CONVEYOR_ARTIFACT_STORE": "s3", "CONVEYOR_S3_BUCKET": "artifacts"},
        },
        {"workers": {"sandbox": {"docker": {"enabled": True}}}},
    ],
    ids=["defaults", "everything-on", "docker-native-sidecar"],
)
def test_every_object_is_valid_for_kubernetes(values: dict[str, Any]) -> None:
    # Given the chart with its defaults, or with every option turned on
    try:
        import kubernetes_validate
    except ImportError as exc:
        missing("kubernetes-validate", str(exc))
    rendered = render(values)
    assert rendered.objects
    for obj in rendered.objects:
        # Then every object names itself in the release's namespace
        assert obj["apiVersion"] and obj["kind"], obj
        assert obj["metadata"]["name"].startswith(f"{RELEASE}-conveyor"), obj["metadata"]
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        assert len(obj["metadata"]["name"]) <= 63
        # And matches Kubernetes' schema for its kind, unknown fields refused
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_helm_lint_finds_nothing_wrong() -> None:
    # Given `helm lint --strict` with the required values, Then it reports no warning or error
    report = helm().lint(str(CHART), REQUIRED, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_a_database_and_a_broker_are_required() -> None:
    # Given no database URL, Then the chart refuses to render, saying what is missing
    assert "database.url or database.existingSecret is required" in refused(
        {"broker": {"url": BROKER_URL}}, required=False
    )
    # And the same for the broker
    assert "broker.url or broker.existingSecret is required" in refused(
        {"database": {"url": DATABASE_URL}}, required=False
    )


def test_values_are_checked_against_the_schema() -> None:
    # Given a misspelled key, a pool name Kubernetes cannot use, a key that is no key,
    # and a secret setting in the (non-secret) ConfigMap, Then each is refused
    assert "'workres' not allowed" in refused({"workres": {}})
    assert "my_pool" in refused({"workers": {"my_pool": {}}})
    assert "secretKey/value" in refused({"secretKey": {"value": "not-a-fernet-key"}})
    assert "CONVEYOR_SECRET_KEY" in refused({"config": {"CONVEYOR_SECRET_KEY": "x"}})


# -- workers ------------------------------------------------------------------------------


def test_one_worker_deployment_per_queue() -> None:
    # Given the defaults
    rendered = render()
    for queue in QUEUES:
        worker = container(rendered.deployment(f"worker-{queue}"), "worker")
        args = worker["args"]
        # Then each queue has a Deployment running `conveyor worker -Q <queue>`
        assert args[:3] == ["worker", "-Q", queue], args
        # And a node name unique to its pod (the liveness probe pings it)
        assert args[args.index("-n") + 1] == f"{queue}@$(POD_NAME)"
        assert env(worker)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # And the control pool runs more steps at once (they are short)
    control = container(rendered.deployment("worker-control"), "worker")["args"]
    assert control[control.index("--concurrency") + 1] == "4"
    assert {d["metadata"]["name"] for d in rendered.kind("Deployment")} == {
        f"{RELEASE}-conveyor-{c}"
        for c in ("api", "beat", "flower", *(f"worker-{q}" for q in QUEUES))
    }


def test_a_pool_is_scaled_and_shaped_on_its_own() -> None:
    # Given one pool scaled, one turned off, and a pool of a user's own serving two queues
    rendered = render(
        {
            "workers": {
                "sandbox": {"replicas": 5, "concurrency": 8, "terminationGracePeriodSeconds": 3600},
                "deploy": {"enabled": False},
                "builds": {"queues": ["builds", "gpu_jobs"], "replicas": 0},
            }
        }
    )
    sandbox = rendered.deployment("worker-sandbox")
    # Then that pool alone changes, keeping the defaults it did not set
    assert sandbox["spec"]["replicas"] == 5
    pod = sandbox["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 3600
    assert container(sandbox, "worker")["resources"]["requests"]["memory"] == "512Mi"
    assert rendered.deployment("worker-scan")["spec"]["replicas"] == 1
    # And the pool turned off is gone
    assert not [d for d in rendered.kind("Deployment") if d["metadata"]["name"].endswith("deploy")]
    # And the user's pool consumes both queues, with 0 replicas kept as 0
    builds = rendered.deployment("worker-builds")
    assert container(builds, "worker")["args"][:3] == ["worker", "-Q", "builds,gpu_jobs"]
    assert builds["spec"]["replicas"] == 0


def test_workers_stop_gracefully() -> None:
    # Given the defaults, Then a worker pod has time for Celery's warm shutdown
    rendered = render({"workerDefaults": {"terminationGracePeriodSeconds": 1200}})
    for queue in QUEUES:
        pod = rendered.deployment(f"worker-{queue}")["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == 1200


def test_worker_liveness_pings_its_own_node() -> None:
    # Given the defaults
    for queue in QUEUES:
        worker = container(render().deployment(f"worker-{queue}"), "worker")
        probe = worker["livenessProbe"]
        command = probe["exec"]["command"]
        # Then the probe asks Celery to ping this pod's node, through the broker
        assert command[:2] == ["sh", "-c"]
        assert "celery -A conveyor.workers.celery_app inspect ping" in command[2]
        assert f'-d "{queue}@$POD_NAME"' in command[2]
        # And gives a busy or briefly cut-off worker minutes before a restart
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 120
    # And it can be turned off
    off = render({"workerDefaults": {"livenessProbe": {"enabled": False}}})
    assert "livenessProbe" not in container(off.deployment("worker-scan"), "worker")


def test_autoscaling_a_pool() -> None:
    # Given autoscaling on for the sandbox pool
    rendered = render(
        {"workers": {"sandbox": {"autoscaling": {"enabled": True, "maxReplicas": 9}}}}
    )
    hpa = rendered.get("HorizontalPodAutoscaler", f"{RELEASE}-conveyor-worker-sandbox")
    # Then an autoscaler drives that Deployment, which leaves its replicas to it
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-conveyor-worker-sandbox"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 9)
    assert "replicas" not in rendered.deployment("worker-sandbox")["spec"]
    # And the other pools have none
    assert len(rendered.kind("HorizontalPodAutoscaler")) == 1
    # And without a CPU request to scale against, the chart says so
    no_cpu = {
        "workerDefaults": {"resources": None},
        "workers": {"scan": {"autoscaling": {"enabled": True}}},
    }
    assert "workers.scan.resources.requests.cpu" in refused(no_cpu)


def test_beat_runs_exactly_once() -> None:
    # Given the defaults
    beat = render().deployment("beat")
    # Then beat is one replica, replaced (never doubled) on upgrade
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert container(beat, "beat")["args"] == ["beat"]
    # And no value can scale it
    assert "replicas" in refused({"beat": {"replicas": 2}})
    assert not [
        h
        for h in render({"workerDefaults": {"autoscaling": {"enabled": True}}}).kind(
            "HorizontalPodAutoscaler"
        )
        if h["spec"]["scaleTargetRef"]["name"].endswith("beat")
    ]


# -- workspaces ---------------------------------------------------------------------------

WORKSPACES = "/var/lib/conveyor/workspaces"


def test_workers_on_several_pods_need_a_store_they_all_reach() -> None:
    # Given the four default pools, the local artifact store and no shared claim
    given = {"database": {"url": DATABASE_URL}, "broker": {"url": BROKER_URL}}
    error = refused(given, required=False)
    # Then the chart refuses, saying how a run's workspace could go from pod to pod
    assert "up to 4 worker pods would share no directory" in error
    assert "CONVEYOR_ARTIFACT_STORE=s3" in error and "workspaces.sharedClaim" in error
    # And an autoscaler's ceiling counts, not the replicas of the moment
    one = {"workers": {"control": {"queues": list(QUEUES)}, **dict.fromkeys(QUEUES[1:], None)}}
    scaled = merged(one, {"workers": {"control": {"autoscaling": {"enabled": True}}}})
    assert "up to 4 worker pods" in refused(merged(given, scaled), required=False)
    # And a single worker pod, which holds every workspace, renders
    alone = render(merged(given, one), required=False)
    pools = [d for d in alone.kind("Deployment") if "-worker-" in d["metadata"]["name"]]
    assert [d["spec"]["replicas"] for d in pools] == [1]
    # And with S3 the workspaces are handed over through it, each pod with its own copy
    config = render().get("ConfigMap", f"{RELEASE}-conveyor")["data"]
    assert config["CONVEYOR_WORKSPACE_SHARED"] == "false"
    assert "workspaces" not in mounts(container(render().deployment("worker-scan"), "worker"))


def test_a_shared_workspaces_claim_is_one_directory_for_every_step() -> None:
    # Given a ReadWriteMany claim for the workspaces (no S3), and Docker for the sandbox pool
    values = {
        "database": {"url": DATABASE_URL},
        "broker": {"url": BROKER_URL},
        "workspaces": {"sharedClaim": "conveyor-workspaces"},
        "workers": {"sandbox": {"docker": {"enabled": True}}},
    }
    rendered = render(values, required=False)
    # Then every worker and the API mount it at the workspace root
    for component in ("api", *(f"worker-{q}" for q in QUEUES)):
        deployment = rendered.deployment(component)
        pod = deployment["spec"]["template"]["spec"]
        claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
        assert claims["workspaces"] == {"claimName": "conveyor-workspaces"}, component
        assert mounts(main(deployment))["workspaces"] == WORKSPACES, component
    # And the Docker sidecar sees it at the same path, so a step's container does too
    sandbox = rendered.deployment("worker-sandbox")
    assert mounts(container(sandbox, "docker"))["workspaces"] == WORKSPACES
    # And Conveyor is told that nothing is to be copied
    config = rendered.get("ConfigMap", f"{RELEASE}-conveyor")["data"]
    assert config["CONVEYOR_WORKSPACE_SHARED"] == "true"
    assert "nothing is copied" in rendered.notes
    # And a shared data directory means the same
    whole = render(
        {**values, "workspaces": {"sharedClaim": ""}, "dataVolume": {"existingClaim": "data"}},
        required=False,
    )
    assert whole.get("ConfigMap", f"{RELEASE}-conveyor")["data"]["CONVEYOR_WORKSPACE_SHARED"] == (
        "true"
    )
    # And the setting is the chart's to make, not a value of config to contradict it
    assert "CONVEYOR_WORKSPACE_SHARED" in refused({"config": {"CONVEYOR_WORKSPACE_SHARED": True}})


# -- the schema migration -----------------------------------------------------------------


def test_the_schema_is_migrated_before_anything_starts() -> None:
    # Given the defaults
    rendered = render()
    job = rendered.get("Job", f"{RELEASE}-conveyor-migrate")
    notes = job["metadata"]["annotations"]
    # Then a hook job runs `conveyor db upgrade` before install and before each upgrade
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    migrate = container(job, "migrate")
    assert migrate["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # And the Secret it reads is a hook too, made before it
    secret = rendered.get("Secret", f"{RELEASE}-conveyor")["metadata"]["annotations"]
    assert "pre-install" in secret["helm.sh/hook"]
    assert int(secret["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"])
    # And the job gets the database, and nothing it does not need
    assert set(env(migrate)) == {"CONVEYOR_DATABASE_URL"}
    # And it can be left to the operator
    assert not render({"migrations": {"enabled": False}}).kind("Job")


# -- settings and secrets -----------------------------------------------------------------


def test_processes_read_their_secrets_from_the_secret() -> None:
    # Given URLs as values and no key
    rendered = render()
    data = rendered.secret_data(f"{RELEASE}-conveyor")
    # Then the chart's Secret holds them, with a generated key Fernet accepts
    assert data["database-url"] == DATABASE_URL
    assert data["broker-url"] == BROKER_URL
    Fernet(data["secret-key"].encode())
    # And the API and the workers read all three from it, never as plain values
    for component in ("api", *(f"worker-{q}" for q in QUEUES)):
        entries = env(main(rendered.deployment(component)))
        for name in SECRET_ENV:
            ref = entries[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == f"{RELEASE}-conveyor", (component, name)
            assert "value" not in entries[name]
    # And beat and Flower get the broker only: no database password, no key
    for component in ("beat", "flower"):
        names = set(env(main(rendered.deployment(component))))
        assert "CONVEYOR_BROKER_URL" in names
        assert not names & {"CONVEYOR_DATABASE_URL", "CONVEYOR_SECRET_KEY"}, component


def test_existing_secrets_are_used_as_they_are() -> None:
    # Given every secret in Secrets of the user's own
    rendered = render(
        {
            "database": {"url": "", "existingSecret": "pg", "existingSecretKey": "uri"},
            "broker": {"url": "", "existingSecret": "mq"},
            "secretKey": {"existingSecret": "sealing", "existingSecretKey": "fernet"},
            "config": S3,
        },
        required=False,
    )
    # Then the chart makes no Secret of its own for them
    assert not [
        s for s in rendered.kind("Secret") if s["metadata"]["name"] == f"{RELEASE}-conveyor"
    ]
    # And the processes read the user's
    worker = env(container(rendered.deployment("worker-sandbox"), "worker"))
    refs = {n: worker[n]["valueFrom"]["secretKeyRef"] for n in SECRET_ENV}
    assert refs["CONVEYOR_DATABASE_URL"] == {"name": "pg", "key": "uri"}
    assert refs["CONVEYOR_BROKER_URL"] == {"name": "mq", "key": "broker-url"}
    assert refs["CONVEYOR_SECRET_KEY"] == {"name": "sealing", "key": "fernet"}


def test_a_given_secret_key_is_kept() -> None:
    # Given a key as a value, Then it is the one in the Secret
    key = Fernet.generate_key().decode()
    data = render({"secretKey": {"value": key}}).secret_data(f"{RELEASE}-conveyor")
    assert data["secret-key"] == key


def test_settings_go_to_a_configmap_every_process_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given settings, one of them a list
    config = {
        "CONVEYOR_ARTIFACT_STORE": "s3",
        "CONVEYOR_RECONCILE_SECONDS": 5,
        "CONVEYOR_DOCKER_ALLOWED_MOUNTS": ["/var/lib/conveyor/cache"],
    }
    rendered = render({"config": config})
    data = rendered.get("ConfigMap", f"{RELEASE}-conveyor")["data"]
    # Then the ConfigMap holds them as strings, the list as JSON (as pydantic-settings reads it)
    assert data["CONVEYOR_ARTIFACT_STORE"] == "s3"
    assert data["CONVEYOR_RECONCILE_SECONDS"] == "5"
    assert data["CONVEYOR_DOCKER_ALLOWED_MOUNTS"] == '["/var/lib/conveyor/cache"]'
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    assert Settings().docker_allowed_mounts == ["/var/lib/conveyor/cache"]
    # And every long-running process reads it
    for deployment in rendered.kind("Deployment"):
        sources = [
            s["configMapRef"]["name"] for s in main(deployment)["envFrom"] if "configMapRef" in s
        ]
        assert sources == [f"{RELEASE}-conveyor"], deployment["metadata"]["name"]


def test_every_setting_the_chart_sets_is_one_conveyor_reads() -> None:
    # Given everything turned on
    rendered = render({"workers": {"sandbox": {"docker": {"enabled": True}}}})
    names = set(rendered.get("ConfigMap", f"{RELEASE}-conveyor")["data"])
    for pod in rendered.pods():
        for c in containers(pod):
            names |= {e["name"] for e in c.get("env", [])}
    # Then each CONVEYOR_* variable is a field of Settings (no misspelled setting is ignored)
    settings = {n.removeprefix("CONVEYOR_").lower() for n in names if n.startswith("CONVEYOR_")}
    assert settings and settings <= set(Settings.model_fields), settings - set(
        Settings.model_fields
    )


# -- probes and security ------------------------------------------------------------------


def test_api_probes_and_service() -> None:
    # Given the defaults
    rendered = render()
    api = container(rendered.deployment("api"), "api")
    # Then the API listens on all interfaces in its pod, and is probed on its own routes
    assert api["args"][:5] == ["api", "--host", "0.0.0.0", "--port", "8080"]
    assert api["livenessProbe"]["httpGet"] == {"path": "/api/v1/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/api/v1/readyz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/api/v1/healthz"
    # And a Service and a disruption budget cover its pods
    service = rendered.get("Service", f"{RELEASE}-conveyor-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = rendered.get("PodDisruptionBudget", f"{RELEASE}-conveyor-api")
    labels = rendered.deployment("api")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()


def test_pods_run_hardened() -> None:
    # Given the defaults
    for pod in render().pods():
        # Then no pod runs as root, reaches the Kubernetes API, or gets service variables
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        for c in containers(pod):
            # And every container has a read-only root, no capabilities and no escalation
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, c["name"]
            assert context["capabilities"]["drop"] == ["ALL"], c["name"]
            assert context["allowPrivilegeEscalation"] is False, c["name"]
            assert not context.get("privileged"), c["name"]
            # And writes go to its volumes: the data directory and /tmp
            assert set(mounts(c).values()) >= {"/var/lib/conveyor", "/tmp"}, c["name"]


def test_docker_sidecar_for_the_sandbox_pool() -> None:
    # Given Docker turned on for the sandbox pool (Kubernetes new enough for native sidecars)
    rendered = render({"workers": {"sandbox": {"docker": {"enabled": True}}}})
    sandbox = rendered.deployment("worker-sandbox")["spec"]["template"]["spec"]
    dind = next(c for c in sandbox["initContainers"] if c["name"] == "docker")
    worker = next(c for c in sandbox["containers"] if c["name"] == "worker")
    # Then a Docker engine runs beside the worker, started before it and stopped after it
    assert dind["restartPolicy"] == "Always"
    assert "dockerd" in dind["args"]
    assert "startupProbe" in dind
    # And it alone is privileged; the worker stays unprivileged and non-root
    assert dind["securityContext"]["privileged"] is True
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert not worker["securityContext"].get("privileged")
    # And the worker reaches it on a unix socket in a volume they share (no TCP port)
    socket = env(worker)["DOCKER_HOST"]["value"]
    assert socket.startswith("unix://")
    assert f"--host={socket}" in dind["args"]
    assert not [a for a in dind["args"] if "tcp://" in a]
    assert mounts(worker)["docker-socket"] == mounts(dind)["docker-socket"]
    assert socket.removeprefix("unix://").startswith(mounts(worker)["docker-socket"] + "/")
    # And the socket belongs to the worker's group
    assert "--group=10001" in dind["args"]
    # And the data directory is at the same path in both
    assert mounts(dind)["data"] == mounts(worker)["data"] == "/var/lib/conveyor"
    # And the other pools have no engine
    for queue in ("control", "scan", "deploy"):
        pod = rendered.deployment(f"worker-{queue}")["spec"]["template"]["spec"]
        assert "docker" not in {c["name"] for c in containers(pod)}, queue
        assert "DOCKER_HOST" not in env(pod["containers"][0])


def test_docker_sidecar_as_a_plain_container_when_asked() -> None:
    # Given Docker on for scan, as a plain sidecar (a cluster older than 1.29)
    rendered = render(
        {"workers": {"scan": {"docker": {"enabled": True}}}, "dind": {"nativeSidecar": False}}
    )
    pod = rendered.deployment("worker-scan")["spec"]["template"]["spec"]
    # Then it runs among the containers, with no restart policy of its own
    assert "initContainers" not in pod
    dind = next(c for c in pod["containers"] if c["name"] == "docker")
    assert "restartPolicy" not in dind and "startupProbe" not in dind


# -- Flower, metrics and notes ------------------------------------------------------------


def test_flower_behind_basic_auth() -> None:
    # Given the defaults
    rendered = render()
    flower = container(rendered.deployment("flower"), "flower")
    # Then Flower is Celery's own, on the Conveyor app
    assert flower["command"] == ["celery"]
    assert flower["args"][:3] == ["-A", "conveyor.workers.celery_app", "flower"]
    # And its login comes from a Secret, made with a generated password
    ref = env(flower)["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    user, _, password = rendered.secret_data(ref["name"])[ref["key"]].partition(":")
    assert user == "admin" and len(password) >= 16
    # And it is probed on the one route that needs no login
    assert flower["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    assert rendered.get("Service", f"{RELEASE}-conveyor-flower")
    # And a login of the user's own is used as it is
    own = render({"flower": {"basicAuth": {"existingSecret": "flower-login"}}})
    own_ref = env(container(own.deployment("flower"), "flower"))["FLOWER_BASIC_AUTH"]
    assert own_ref["valueFrom"]["secretKeyRef"] == {"name": "flower-login", "key": "auth"}
    assert not [s for s in own.kind("Secret") if "flower" in s["metadata"]["name"]]


def test_flower_can_be_left_out() -> None:
    # Given Flower turned off, Then nothing of it is rendered
    rendered = render({"flower": {"enabled": False}})
    assert not [o for o in rendered.objects if "flower" in o["metadata"]["name"]]
    assert "Flower" not in rendered.notes


def test_service_monitor_scrapes_metrics_with_a_token() -> None:
    # Given the ServiceMonitor on, with the Secret holding a viewer token
    rendered = render({"serviceMonitor": {"enabled": True, "tokenSecret": {"name": "prom"}}})
    monitor = rendered.get("ServiceMonitor", f"{RELEASE}-conveyor-api")
    endpoint = monitor["spec"]["endpoints"][0]
    # Then Prometheus scrapes the API's metrics route with that token
    assert endpoint["path"] == "/api/v1/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "prom", "key": "token"}
    # And without a token Secret the chart says what to do
    assert "conveyor token create --role viewer" in refused({"serviceMonitor": {"enabled": True}})
    # And it is off by default (its CRD may not exist)
    assert not render().kind("ServiceMonitor")


def test_notes_tell_how_to_reach_it_and_what_is_missing() -> None:
    # Given the defaults, Then the notes say how to reach the API and Flower
    notes = render().notes
    assert f"port-forward svc/{RELEASE}-conveyor-api" in notes
    assert "conveyor token create --role admin" in notes
    assert f"port-forward svc/{RELEASE}-conveyor-flower" in notes
    # And warn about what the defaults cannot do: Docker steps
    assert "no worker has a Docker engine" in notes
    assert "workspace goes from pod to pod through the artifact store" in notes
    # And artifacts a single pod keeps to itself, when the store is its own directory
    alone = render(
        {
            "database": {"url": DATABASE_URL},
            "broker": {"url": BROKER_URL},
            "workers": {"control": {"queues": list(QUEUES)}, **dict.fromkeys(QUEUES[1:], None)},
            "workerDefaults": {"enabled": True},
        },
        required=False,
    )
    assert "CONVEYOR_ARTIFACT_STORE" in alone.notes
    # And the warnings go once they are dealt with
    ready = render({"workers": {"sandbox": {"docker": {"enabled": True}}}}).notes
    assert "no worker has a Docker engine" not in ready
    assert "CONVEYOR_ARTIFACT_STORE" not in ready
