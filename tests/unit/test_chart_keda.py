"""Queue-length autoscaling of the worker pools with KEDA, as the chart renders it.

The ScaledObjects and the TriggerAuthentication are checked against KEDA's own CRD
schema, as the cloudcoil-models-keda package generates it (pydantic models made from the
openAPIV3Schema of KEDA's CRDs): a field KEDA does not know fails the check, as does a
value of the wrong type (trigger metadata is strings only). What each scaler reads from
that metadata (the redis and rabbitmq scalers' documented fields) is checked here.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import missing
from tests.unit.test_helm_chart import (
    DATABASE_URL,
    RELEASE,
    S3,
    Rendered,
    merged,
    refused,
    render,
)

KEDA = {"autoscaling": {"keda": {"enabled": True}}}
AUTH = f"{RELEASE}-conveyor-broker"


def crd_models() -> Any:
    """KEDA's v1alpha1 models, or a skip (a failure under CI) without them."""
    try:
        from cloudcoil.models.keda import v1alpha1
    except ImportError as exc:
        missing("cloudcoil-models-keda", f"{exc} (pip install -e '.[dev]')")
    return v1alpha1


def valid_for_keda(obj: dict[str, Any]) -> None:
    """``obj`` as KEDA's CRD schema accepts it: every field known, of its type."""
    model = getattr(crd_models(), obj["kind"])
    parsed = model.model_validate(obj)
    # Unknown fields are dropped by the models: what comes back must be all there was.
    back = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == obj, (obj, back)


def keda_render(values: dict[str, Any]) -> Rendered:
    """The chart with KEDA on and ``values`` over it."""
    return render(merged(KEDA, values))


def scaled(rendered: Rendered, pool: str) -> dict[str, Any]:
    """The ScaledObject of a pool."""
    return rendered.get("ScaledObject", f"{RELEASE}-conveyor-worker-{pool}")


def test_each_pool_scales_on_its_redis_list() -> None:
    # Given KEDA on, the Redis broker (database 0), and the scan pool allowed to go to zero
    rendered = keda_render({"workers": {"scan": {"keda": {"minReplicas": 0, "maxReplicas": 6}}}})
    for obj in rendered.kind("ScaledObject") + rendered.kind("TriggerAuthentication"):
        valid_for_keda(obj)
    # Then each pool has a ScaledObject driving its Deployment
    for pool in ("control", "sandbox", "scan", "deploy"):
        spec = scaled(rendered, pool)["spec"]
        assert spec["scaleTargetRef"]["name"] == f"{RELEASE}-conveyor-worker-{pool}"
        [trigger] = spec["triggers"]
        # On the length of the list Celery keeps the pool's queue in
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == pool
        assert trigger["metadata"]["databaseIndex"] == "0"
        assert trigger["authenticationRef"] == {"name": AUTH}
        # And KEDA, not the chart, sets its replicas
        assert "replicas" not in rendered.deployment(f"worker-{pool}")["spec"]
    # And a pod is wanted per `concurrency` steps waiting (4 on control, 2 elsewhere)
    assert scaled(rendered, "control")["spec"]["triggers"][0]["metadata"]["listLength"] == "4"
    assert scaled(rendered, "sandbox")["spec"]["triggers"][0]["metadata"]["listLength"] == "2"
    scan = scaled(rendered, "scan")["spec"]
    assert (scan["minReplicaCount"], scan["maxReplicaCount"]) == (0, 6)
    assert scaled(rendered, "control")["spec"]["minReplicaCount"] == 1
    # And no CPU autoscaler fights KEDA
    assert not rendered.kind("HorizontalPodAutoscaler")


def test_the_redis_address_and_password_come_from_the_secret() -> None:
    # Given a TLS Redis with a password, database 3
    rendered = keda_render({"broker": {"url": "rediss://:hunter2@cache.example:6380/3"}})
    # Then the ScaledObjects hold neither the address nor the password
    for obj in rendered.kind("ScaledObject"):
        assert "hunter2" not in str(obj) and "cache.example" not in str(obj)
        metadata = obj["spec"]["triggers"][0]["metadata"]
        assert (metadata["databaseIndex"], metadata["enableTLS"]) == ("3", "true")
    # And the TriggerAuthentication reads them from the chart's Secret
    auth = rendered.get("TriggerAuthentication", AUTH)
    valid_for_keda(auth)
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"address", "password"}
    data = rendered.secret_data(refs["address"]["name"])
    assert data[refs["address"]["key"]] == "cache.example:6380"
    assert data[refs["password"]["key"]] == "hunter2"


def test_each_pool_scales_on_its_rabbitmq_queue() -> None:
    # Given a RabbitMQ broker, and a pool of a user's own serving two queues
    url = "amqp://conveyor:s3cret@mq.example:5672//"
    rendered = keda_render(
        {"broker": {"url": url}, "workers": {"builds": {"queues": ["builds", "gpu_jobs"]}}}
    )
    for obj in rendered.kind("ScaledObject") + rendered.kind("TriggerAuthentication"):
        valid_for_keda(obj)
    # Then every pool scales on its queues' length, one trigger per queue
    builds = scaled(rendered, "builds")["spec"]["triggers"]
    assert [t["metadata"]["queueName"] for t in builds] == ["builds", "gpu_jobs"]
    for trigger in builds:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["protocol"] == "amqp"
        assert trigger["metadata"]["value"] == "2"
        assert "host" not in trigger["metadata"]
    # And the broker's URL (with its password) reaches KEDA from the Secret only
    assert "s3cret" not in str(rendered.kind("ScaledObject"))
    [ref] = rendered.get("TriggerAuthentication", AUTH)["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = rendered.get("Secret", ref["name"])["data"]
    assert base64.b64decode(secret[ref["key"]]).decode() == url


def test_a_broker_in_an_existing_secret_is_named_and_used_as_it_is() -> None:
    # Given the RabbitMQ URL in a Secret of the user's own
    values = merged(
        KEDA,
        {
            "database": {"url": DATABASE_URL},
            "broker": {"existingSecret": "mq", "existingSecretKey": "url"},
            "config": S3,
        },
    )
    # Then the chart cannot tell the broker, and asks for it
    assert "autoscaling.keda.broker (redis or rabbitmq) is required" in refused(
        values, required=False
    )
    # And once told, KEDA reads the URL from that Secret
    told = render(merged(values, {"autoscaling": {"keda": {"broker": "rabbitmq"}}}), required=False)
    [ref] = told.get("TriggerAuthentication", AUTH)["spec"]["secretTargetRef"]
    assert (ref["name"], ref["key"]) == ("mq", "url")
    # And a Redis one needs its address given apart, the password from a Secret
    redis = merged(values, {"autoscaling": {"keda": {"broker": "redis"}}})
    assert "autoscaling.keda.redis.address" in refused(redis, required=False)
    given = {"address": "cache:6379", "databaseIndex": 2, "passwordSecret": {"name": "pw"}}
    shown = render(merged(redis, {"autoscaling": {"keda": {"redis": given}}}), required=False)
    for obj in shown.kind("ScaledObject") + shown.kind("TriggerAuthentication"):
        valid_for_keda(obj)
    metadata = scaled(shown, "scan")["spec"]["triggers"][0]["metadata"]
    assert (metadata["address"], metadata["databaseIndex"]) == ("cache:6379", "2")
    [password] = shown.get("TriggerAuthentication", AUTH)["spec"]["secretTargetRef"]
    assert password == {"parameter": "password", "name": "pw", "key": "redis-password"}


def test_the_control_pool_never_scales_to_zero() -> None:
    # Given the control pool allowed to go to zero, Then the chart refuses it
    error = refused(merged(KEDA, {"workers": {"control": {"keda": {"minReplicas": 0}}}}))
    assert "workers.control.keda.minReplicas must be at least 1" in error
    # And so for any pool that consumes the control queue
    mine = {"workers": {"mine": {"queues": ["control", "x"], "keda": {"minReplicas": 0}}}}
    assert "workers.mine.keda.minReplicas" in refused(merged(KEDA, mine))


@pytest.mark.parametrize("broker", ["redis://r:6379/0", "amqp://u:p@mq:5672//"])
def test_without_keda_the_cpu_autoscaler_stays_the_fallback(broker: str) -> None:
    # Given KEDA off (the default), and CPU autoscaling on for sandbox
    cpu = {"broker": {"url": broker}, "workers": {"sandbox": {"autoscaling": {"enabled": True}}}}
    rendered = render(cpu)
    # Then nothing of KEDA is rendered, and the CPU autoscaler drives sandbox
    assert not rendered.kind("ScaledObject") and not rendered.kind("TriggerAuthentication")
    assert [h["metadata"]["name"] for h in rendered.kind("HorizontalPodAutoscaler")] == [
        f"{RELEASE}-conveyor-worker-sandbox"
    ]
    # And a pool KEDA is turned off for keeps its CPU autoscaler when KEDA is on
    off = merged(KEDA, merged(cpu, {"workers": {"sandbox": {"keda": {"enabled": False}}}}))
    both = render(off)
    assert len(both.kind("HorizontalPodAutoscaler")) == 1
    assert len(both.kind("ScaledObject")) == 3
    assert "(KEDA on queue length, 1-10)" in both.notes
