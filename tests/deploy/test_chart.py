"""The Helm chart, rendered by the real Helm engine (helm-python-sdk, no helm binary).

Each value set is linted and rendered offline; every manifest is validated
against the Kubernetes API schemas (kubernetes-validate) and scanned with
checkov; every `DEEPSCREEN_*` variable the chart sets must be a setting the
service reads, and the rendered environment must load as `Settings`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_python import _native
from pydantic import BaseModel

from consumer.settings import ProvenanceSettings, Settings, load_settings
from detector.config import ActionPolicy, CredentialsConfig, ImageLimits
from schemas.verdict import Action
from tests.support.timings import TIMING_VARIABLES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "deepscreen"
RELEASE = "screen"
NAMESPACE = "trust-safety"
KUBE_VERSION = "1.31.0"
MONITORING = "monitoring.coreos.com/v1"
# Custom resources kubernetes-validate has no schema for: checked by hand below.
CUSTOM_KINDS = {"ScaledObject": "keda.sh/v1alpha1", "ServiceMonitor": MONITORING}

SECRETS: dict[str, Any] = {
    "kafka": {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "securityProtocol": "SASL_SSL",
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "deepscreen",
            "existingSecret": "kafka-sasl",
            "passwordKey": "password",
        },
        "tls": {
            "existingSecret": "kafka-tls",
            "caKey": "ca.crt",
            "certKey": "tls.crt",
            "keyKey": "tls.key",
            "keyPasswordKey": "key-password",
        },
        "topics": {"verdicts": "moderation.verdicts"},
    },
    "redis": {
        "url": "rediss://redis-master.cache:6379/0",
        "existingSecret": "redis",
        "passwordKey": "redis-password",
    },
    "media": {
        "allowedHosts": ["media.example.com", "*.cdn.example.com"],
        "fileRoots": ["/srv/media"],
        "fileRootClaims": [{"claimName": "uploads", "mountPath": "/media/uploads"}],
    },
    "networkPolicy": {
        "egress": {
            "kafka": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}},
                    "podSelector": {"matchLabels": {"app": "kafka"}},
                    "ports": [9093],
                }
            ],
            "redis": [{"cidr": "10.20.0.0/16", "ports": [6379]}],
            "media": [{"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"], "ports": [443]}],
        }
    },
    "image": {"digest": "sha256:" + "ab" * 32},
    "provenance": {"trustAnchors": {"secret": {"name": "c2pa-trust", "key": "trust-list.pem"}}},
}

# The C2PA trust list from an existing ConfigMap (SECRETS takes it from a Secret).
TRUST_ANCHORS_FROM_CONFIGMAP: dict[str, Any] = {
    "provenance": {"trustAnchors": {"configMap": {"name": "c2pa-trust"}}}
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu-only": {"gpu": {"enabled": False}},
    "keda": {
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 12,
            "keda": {"enabled": True, "lagThreshold": 10, "authenticationRef": "kafka-auth"},
        }
    },
    "hpa": {"autoscaling": {"hpa": {"enabled": True}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "existing-secrets": SECRETS,
    "trust-anchors": TRUST_ANCHORS_FROM_CONFIGMAP,
    "model-pvc": {"model": {"source": "pvc", "pvc": {"claimName": "models"}}},
    "model-init": {
        "model": {
            "source": "initContainer",
            "initContainer": {
                "image": {"repository": "registry.example.com/deepscreen-model", "tag": "2026.11"},
            },
        },
        "detector": {"device": "cuda:0", "precision": "bf16", "batchSize": 64},
    },
}


# ------------------------------------------------------------------ helpers --


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render_files(
    chart: helm.Chart, values: dict[str, Any], *, api_versions: tuple[str, ...] = (MONITORING,)
) -> dict[str, str]:
    """Template path → rendered text, as `helm template --api-versions ... --kube-version`.

    `Chart.render` does not expose `api_versions`/`kube_version` (0.2.2), but the
    native `helm_render` call it wraps takes them in its options: call it directly.
    """
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    rendered = _native.call_string(
        "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
    )
    files: dict[str, str] = json.loads(rendered)
    return files


def render(
    chart: helm.Chart, values: dict[str, Any], *, api_versions: tuple[str, ...] = (MONITORING,)
) -> list[dict[str, Any]]:
    """The rendered Kubernetes objects (NOTES.txt left out)."""
    documents: list[dict[str, Any]] = []
    for path, text in sorted(render_files(chart, values, api_versions=api_versions).items()):
        if path.endswith("NOTES.txt"):
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(documents: list[dict[str, Any]]) -> set[str]:
    return {doc["kind"] for doc in documents}


def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(documents, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(documents)["containers"]
    assert [c["name"] for c in containers] == ["deepscreen"]
    main: dict[str, Any] = containers[0]
    return main


def environment(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The main container's environment: ConfigMap entries, then `env` (value or valueFrom)."""
    configmap = one(documents, "ConfigMap")
    main = container(documents)
    assert main["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    env: dict[str, Any] = dict(configmap["data"])
    for item in main.get("env", []):
        assert item["name"] not in env, f"{item['name']} set twice"
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def settings_field(name: str) -> bool:
    """Whether `DEEPSCREEN_A__B` names a field of `Settings` (section `a`, field `b`)."""
    parts = name.removeprefix("DEEPSCREEN_").lower().split("__")
    model: type[BaseModel] = Settings
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        last = index == len(parts) - 1
        if last:
            return not (isinstance(annotation, type) and issubclass(annotation, BaseModel))
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return False


# Read by load_settings() itself, not a field.
EXTRA_SETTINGS = {"DEEPSCREEN_SECRETS_DIR"}


# -------------------------------------------------------------------- lint --


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(scenario: str) -> None:
    report = helm.lint(
        CHART,
        SCENARIOS[scenario],
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], problems


def test_chart_metadata(chart: helm.Chart) -> None:
    metadata = chart.metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["type"] == "application"
    assert metadata["appVersion"] == "0.1.0"


# ---------------------------------------------------------- kubernetes API --


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_are_valid_kubernetes_objects(chart: helm.Chart, scenario: str) -> None:
    documents = render(chart, SCENARIOS[scenario])
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount"} <= kinds(documents)
    for doc in documents:
        if doc["kind"] in CUSTOM_KINDS:
            # CRDs: no schema in kubernetes-validate; their fields are asserted below.
            assert doc["apiVersion"] == CUSTOM_KINDS[doc["kind"]]
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == NAMESPACE


# -------------------------------------------------------------- settings --


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_setting_is_read_by_the_service(chart: helm.Chart, scenario: str) -> None:
    documents = render(chart, SCENARIOS[scenario])
    names = set(environment(documents))
    for init in pod_spec(documents).get("initContainers", []):
        names |= {item["name"] for item in init.get("env", [])}
    ours = {name for name in names if name.startswith("DEEPSCREEN_")}
    assert ours, "the chart sets no DEEPSCREEN_ variable"
    unknown = sorted(n for n in ours if not settings_field(n) and n not in EXTRA_SETTINGS)
    assert unknown == [], f"not settings of consumer.settings.Settings: {unknown}"


def test_the_settings_walk_tells_real_names_from_made_up_ones() -> None:
    assert settings_field("DEEPSCREEN_KAFKA__SASL_PASSWORD")
    assert settings_field("DEEPSCREEN_DRAIN_SECONDS")
    assert not settings_field("DEEPSCREEN_KAFKA")  # a section, not a setting
    assert not settings_field("DEEPSCREEN_KAFKA__TOPIC")
    assert not settings_field("DEEPSCREEN_DRAIN_SECONDS__X")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_rendered_environment_loads_as_settings(
    chart: helm.Chart, scenario: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = environment(render(chart, SCENARIOS[scenario]))
    settings = settings_from(env, monkeypatch, tmp_path)
    assert settings.http.port == 8080
    assert str(settings.media.temp_dir) == "/tmp"
    assert settings.drain_seconds == 30


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The `Settings` the service loads from a rendered environment (secrets stubbed)."""
    for name in [n for n in os.environ if n.startswith("DEEPSCREEN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEEPSCREEN_SECRETS_DIR", str(tmp_path / "no-secrets"))
    for name, value in env.items():
        if name.startswith("DEEPSCREEN_"):
            monkeypatch.setenv(name, value if isinstance(value, str) else "from-a-secret")
    return load_settings()


def setting(settings: BaseModel, name: str) -> Any:
    """The value of `DEEPSCREEN_A__B` in `settings`."""
    value: Any = settings
    for part in name.removeprefix("DEEPSCREEN_").lower().split("__"):
        value = getattr(value, part)
    return value


# Where the chart's defaults differ from the service's on purpose.
CHART_CHOICES = {
    "DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS",  # a broker in the cluster, not localhost
    "DEEPSCREEN_MEDIA__TEMP_DIR",  # the pod's bounded /tmp emptyDir
}


def test_the_chart_defaults_are_the_service_defaults(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = environment(render(chart, {}))
    loaded, defaults = settings_from(env, monkeypatch, tmp_path), Settings()
    ours = sorted(n for n in env if n.startswith("DEEPSCREEN_") and n not in CHART_CHOICES)
    differ = {
        name: (setting(loaded, name), setting(defaults, name))
        for name in ours
        if setting(loaded, name) != setting(defaults, name)
    }
    assert differ == {}, "chart value → service default"
    # The content-credentials section and the detector's image limits and actions are
    # all rendered, and so compared above; but the trust anchors, unset like the
    # service's default (no trust list).
    provenance = {
        f"DEEPSCREEN_PROVENANCE__{name.upper()}" for name in ProvenanceSettings.model_fields
    }
    assert provenance - set(ours) == {"DEEPSCREEN_PROVENANCE__TRUST_ANCHORS"}
    assert loaded.provenance.trust_anchors is None
    assert {
        "DEEPSCREEN_DETECTOR__MAX_IMAGE_BYTES",
        "DEEPSCREEN_DETECTOR__MAX_IMAGE_PIXELS",
        "DEEPSCREEN_DETECTOR__REVIEW_ACTION",
        "DEEPSCREEN_DETECTOR__BLOCK_ACTION",
    } <= set(ours)


def test_face_values_render_into_the_detector_faces_settings(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    faces = {
        "modelSelection": 0,
        "minConfidence": 0.6,
        "detectMaxSide": 960,
        "linkIou": 0.4,
        "maxGap": 3,
        "minCoverage": 0.6,
        "minFacePx": 40,
        "cropScale": 1.5,
        "windowLinkIou": 0.25,
    }
    env = environment(render(chart, {"detector": {"faces": faces}}))
    assert env["DEEPSCREEN_DETECTOR__FACES__MIN_CONFIDENCE"] == "0.6"
    assert env["DEEPSCREEN_DETECTOR__FACES__MIN_FACE_PX"] == "40"
    settings = settings_from(env, monkeypatch, tmp_path)
    config = settings.detector_config().faces
    assert (config.model_selection, config.min_confidence, config.detect_max_side) == (0, 0.6, 960)
    assert (config.link_iou, config.max_gap, config.min_coverage) == (0.4, 3, 0.6)
    assert (config.min_face_px, config.crop_scale, config.window_link_iou) == (40, 1.5, 0.25)


def test_timing_values_render_into_the_producer_publish_and_claim_settings(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "kafka": {
            "producerAckTimeoutS": 12.5,
            "producerLingerMs": 20,
            "producerBatchBytes": 65536,
            "producerRetries": 9,
            "publishBackoffInitialS": 0.1,
            "publishBackoffMaxS": 2,
            "flushTimeoutS": 45,
        },
        "redis": {"claimPollS": 0.5, "memoryMaxEntries": 500},
    }
    env = environment(render(chart, values))
    rendered = TIMING_VARIABLES | {"DEEPSCREEN_REDIS__MEMORY_MAX_ENTRIES": "500"}
    assert {name: env.get(name) for name in rendered} == rendered
    settings = settings_from(env, monkeypatch, tmp_path)  # what the service reads them as
    assert (settings.kafka.producer_retries, settings.redis.memory_max_entries) == (9, 500)


def test_provenance_and_image_values_render_into_the_detector_config(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "provenance": {
            "enabled": False,
            "readTimeoutS": 12.5,
            "maxManifestMb": 4,
            "declaredAiAction": "review",
            "declaredCompositeAction": "none",
            "invalidAction": "block",
        },
        "detector": {
            "maxImageBytes": 8388608,
            "maxImagePixels": 1000000,
            "reviewAction": "label",
            "blockAction": "review",
        },
    }
    env = environment(render(chart, values))
    assert env["DEEPSCREEN_PROVENANCE__ENABLED"] == "false"
    assert env["DEEPSCREEN_PROVENANCE__INVALID_ACTION"] == "block"
    assert env["DEEPSCREEN_DETECTOR__MAX_IMAGE_BYTES"] == "8388608"
    config = settings_from(env, monkeypatch, tmp_path).detector_config()
    assert config.credentials == CredentialsConfig(
        enabled=False, read_timeout_s=12.5, max_manifest_mb=4
    )
    assert config.images == ImageLimits(max_bytes=8388608, max_pixels=1000000)
    assert config.actions == ActionPolicy(
        declared_ai=Action.REVIEW,
        declared_composite=Action.NONE,
        invalid_credentials=Action.BLOCK,
        model_review=Action.LABEL,
        model_block=Action.REVIEW,
    )


def test_cpu_backend_values_render_into_the_detectors_cpu_inference(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    defaults = environment(render(chart, {}))
    assert "DEEPSCREEN_DETECTOR__DERIVED_DIR" not in defaults  # the service's own default
    assert "DEEPSCREEN_DETECTOR__CALIBRATION_VIDEOS" not in defaults
    values = {
        "detector": {
            "cpuBackend": "openvino-int8",
            "derivedDir": "/models/derived",
            "calibrationVideos": "/media/calibration",
        }
    }
    env = environment(render(chart, values))
    detector = settings_from(env, monkeypatch, tmp_path).detector
    assert detector.cpu_backend == "openvino-int8"
    assert detector.derived_dir == Path("/models/derived")
    assert detector.calibration_videos == Path("/media/calibration")


# ------------------------------------------------------------- deployment --


def test_default_deployment_runs_on_a_gpu_node(chart: helm.Chart) -> None:
    documents = render(chart, {})
    spec = pod_spec(documents)
    main = container(documents)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["resources"]["limits"]["memory"] and main["resources"]["requests"]["memory"]
    assert spec["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert environment(documents)["DEEPSCREEN_DETECTOR__DEVICE"] == "auto"
    assert one(documents, "Deployment")["spec"]["replicas"] == 1


def test_gpu_count_and_node_selector_come_from_values(chart: helm.Chart) -> None:
    documents = render(
        chart,
        {"gpu": {"count": 2, "nodeSelector": {"gpu": "a100"}}, "nodeSelector": {"zone": "a"}},
    )
    assert container(documents)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod_spec(documents)["nodeSelector"] == {"gpu": "a100", "zone": "a"}


def test_cpu_only_deployment_has_no_gpu_anything(chart: helm.Chart) -> None:
    documents = render(chart, SCENARIOS["cpu-only"])
    spec = pod_spec(documents)
    main = container(documents)
    assert not any("gpu" in key for key in main["resources"]["limits"])
    assert "runtimeClassName" not in spec
    assert "tolerations" not in spec
    assert environment(documents)["DEEPSCREEN_DETECTOR__DEVICE"] == "cpu"


def test_pod_meets_the_restricted_pod_security_standard(chart: helm.Chart) -> None:
    for scenario in ("default", "model-init"):
        documents = render(chart, SCENARIOS[scenario])
        spec = pod_spec(documents)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["runAsGroup"] == 10001
        assert spec["securityContext"]["fsGroup"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in spec["containers"] + spec.get("initContainers", []):
            context = each["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert each["resources"]["limits"]["memory"]
        assert one(documents, "ServiceAccount")["automountServiceAccountToken"] is False


def test_tmp_is_a_bounded_emptydir_and_the_media_temp_dir(chart: helm.Chart) -> None:
    documents = render(chart, {"tmp": {"sizeLimit": "40Gi"}})
    volumes = {v["name"]: v for v in pod_spec(documents)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(documents)["volumeMounts"]}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "40Gi"}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert environment(documents)["DEEPSCREEN_MEDIA__TEMP_DIR"] == "/tmp"


def test_probes_use_the_health_endpoints(chart: helm.Chart) -> None:
    main = container(render(chart, {}))
    port = main["ports"][0]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = main["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    # Model load onto the GPU: the startup probe allows minutes, not seconds.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_grace_period_outlasts_the_drain(chart: helm.Chart) -> None:
    for values in ({}, {"drainSeconds": 90, "terminationGracePeriodSeconds": 120}):
        documents = render(chart, values)
        grace = pod_spec(documents)["terminationGracePeriodSeconds"]
        drain = float(environment(documents)["DEEPSCREEN_DRAIN_SECONDS"])
        assert grace > drain


@pytest.mark.parametrize(("drain", "grace"), [(60, 60), (90, 30)])
def test_grace_period_not_above_the_drain_fails(chart: helm.Chart, drain: int, grace: int) -> None:
    values = {"drainSeconds": drain, "terminationGracePeriodSeconds": grace}
    with pytest.raises(helm.HelmRenderError, match="must be greater than drainSeconds"):
        render(chart, values)


def test_image_by_tag_by_default_and_by_digest_when_given(chart: helm.Chart) -> None:
    assert container(render(chart, {}))["image"] == "ghcr.io/example/deepscreen:0.1.0"
    pinned = container(render(chart, SECRETS))["image"]
    assert pinned == "ghcr.io/example/deepscreen@sha256:" + "ab" * 32
    policy = container(render(chart, {"image": {"pullPolicy": "Always"}}))["imagePullPolicy"]
    assert policy == "Always"


def test_existing_secrets_are_referenced_not_copied(chart: helm.Chart) -> None:
    documents = render(chart, SECRETS)
    env = environment(documents)
    assert env["DEEPSCREEN_KAFKA__SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "kafka-sasl", "key": "password"}
    }
    assert env["DEEPSCREEN_REDIS__PASSWORD"] == {
        "secretKeyRef": {"name": "redis", "key": "redis-password"}
    }
    assert env["DEEPSCREEN_KAFKA__SSL_PASSWORD"] == {
        "secretKeyRef": {"name": "kafka-tls", "key": "key-password"}
    }
    assert env["DEEPSCREEN_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["DEEPSCREEN_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["DEEPSCREEN_KAFKA__SASL_USERNAME"] == "deepscreen"
    tls_dir = "/etc/deepscreen/kafka-tls"
    assert env["DEEPSCREEN_KAFKA__SSL_CAFILE"] == f"{tls_dir}/ca.crt"
    assert env["DEEPSCREEN_KAFKA__SSL_CERTFILE"] == f"{tls_dir}/tls.crt"
    assert env["DEEPSCREEN_KAFKA__SSL_KEYFILE"] == f"{tls_dir}/tls.key"
    volumes = {v["name"]: v for v in pod_spec(documents)["volumes"]}
    mounts = {m["mountPath"]: m for m in container(documents)["volumeMounts"]}
    assert mounts[tls_dir]["readOnly"] is True
    secret = volumes[mounts[tls_dir]["name"]]["secret"]
    assert secret["secretName"] == "kafka-tls"
    assert {item["key"] for item in secret["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    # No Secret object is rendered and no secret value is in the ConfigMap.
    assert "Secret" not in kinds(documents)
    assert not any("PASSWORD" in key for key in one(documents, "ConfigMap")["data"])
    assert json.loads(env["DEEPSCREEN_MEDIA__FILE_ROOTS"]) == ["/srv/media", "/media/uploads"]
    assert json.loads(env["DEEPSCREEN_MEDIA__ALLOWED_HOSTS"]) == [
        "media.example.com",
        "*.cdn.example.com",
    ]
    assert mounts["/media/uploads"]["readOnly"] is True


def trust_anchors_volume(documents: list[dict[str, Any]], mount_path: str) -> dict[str, Any]:
    """The volume mounted at `mount_path` in the main container, which must be read-only."""
    (mount,) = [m for m in container(documents)["volumeMounts"] if m["mountPath"] == mount_path]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a projected key: the file follows the ConfigMap or Secret
    volumes = {v["name"]: v for v in pod_spec(documents)["volumes"]}
    volume: dict[str, Any] = volumes[mount["name"]]
    return volume


def test_trust_anchors_from_a_configmap_are_mounted_read_only_for_the_service(
    chart: helm.Chart,
) -> None:
    documents = render(chart, TRUST_ANCHORS_FROM_CONFIGMAP)
    volume = trust_anchors_volume(documents, "/etc/deepscreen/trust")
    assert volume["configMap"] == {
        "name": "c2pa-trust",
        "defaultMode": 0o444,
        "items": [{"key": "anchors.pem", "path": "anchors.pem"}],
    }
    env = environment(documents)
    assert env["DEEPSCREEN_PROVENANCE__TRUST_ANCHORS"] == "/etc/deepscreen/trust/anchors.pem"


def test_trust_anchors_from_a_secret_are_mounted_read_only_for_the_service(
    chart: helm.Chart,
) -> None:
    documents = render(chart, SECRETS)
    volume = trust_anchors_volume(documents, "/etc/deepscreen/trust")
    assert volume["secret"] == {
        "secretName": "c2pa-trust",
        "defaultMode": 0o440,
        "items": [{"key": "trust-list.pem", "path": "trust-list.pem"}],
    }
    env = environment(documents)
    assert env["DEEPSCREEN_PROVENANCE__TRUST_ANCHORS"] == "/etc/deepscreen/trust/trust-list.pem"
    assert "Secret" not in kinds(documents)


def test_the_service_reads_the_trust_anchors_at_the_rendered_path(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mount_path = tmp_path / "trust"  # stands in for the pod's mount
    values = {
        "provenance": {
            "trustAnchors": {"configMap": {"name": "c2pa-trust"}, "mountPath": str(mount_path)}
        }
    }
    env = environment(render(chart, values))
    mount_path.mkdir()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (mount_path / "anchors.pem").write_text(pem, encoding="ascii")
    settings = settings_from(env, monkeypatch, tmp_path)
    assert settings.detector_config().credentials.trust_anchors_pem == pem


def test_without_trust_anchors_nothing_is_mounted(chart: helm.Chart) -> None:
    documents = render(chart, {})
    assert "DEEPSCREEN_PROVENANCE__TRUST_ANCHORS" not in environment(documents)
    assert not any(v["name"] == "trust-anchors" for v in pod_spec(documents)["volumes"])
    assert not any(
        m["mountPath"] == "/etc/deepscreen/trust" for m in container(documents)["volumeMounts"]
    )


def test_trust_anchors_from_both_a_configmap_and_a_secret_fail_with_a_clear_message(
    chart: helm.Chart,
) -> None:
    both = {"configMap": {"name": "c2pa-trust"}, "secret": {"name": "c2pa-trust-secret"}}
    with pytest.raises(
        helm.HelmRenderError,
        match=re.escape(
            "provenance.trustAnchors: set configMap.name (c2pa-trust) or "
            "secret.name (c2pa-trust-secret), not both"
        ),
    ):
        render(chart, {"provenance": {"trustAnchors": both}})


def test_model_from_a_pvc_is_mounted_read_only(chart: helm.Chart) -> None:
    documents = render(chart, SCENARIOS["model-pvc"])
    mounts = {m["mountPath"]: m for m in container(documents)["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(documents)["volumes"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert claim == {"claimName": "models", "readOnly": True}
    assert environment(documents)["DEEPSCREEN_DETECTOR__MODEL_PATH"] == "/models/default.pt"


def test_model_from_an_init_container_lands_in_an_emptydir(chart: helm.Chart) -> None:
    documents = render(chart, SCENARIOS["model-init"])
    spec = pod_spec(documents)
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example.com/deepscreen-model:2026.11"
    init_env = {item["name"]: item.get("value") for item in init["env"]}
    assert init_env["MODEL_PATH"] == "/models/default.pt"
    volumes = {v["name"]: v for v in spec["volumes"]}
    model_mount = next(m for m in init["volumeMounts"] if m["mountPath"] == "/models")
    assert "emptyDir" in volumes[model_mount["name"]]
    assert environment(documents)["DEEPSCREEN_DETECTOR__MODEL_PATH"] == "/models/default.pt"


def test_model_from_the_image_mounts_nothing(chart: helm.Chart) -> None:
    documents = render(chart, {})
    assert "initContainers" not in pod_spec(documents)
    assert "DEEPSCREEN_DETECTOR__MODEL_PATH" not in environment(documents)  # packaged default
    assert not any(m["mountPath"] == "/models" for m in container(documents)["volumeMounts"])


# ------------------------------------------------------------ autoscaling --


def test_keda_scales_on_consumer_group_lag(chart: helm.Chart) -> None:
    documents = render(chart, SCENARIOS["keda"])
    scaled = one(documents, "ScaledObject")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"] == one(documents, "Deployment")["metadata"]["name"]
    )
    assert scaled["spec"]["maxReplicaCount"] == 12
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
    assert trigger["metadata"]["consumerGroup"] == "deepscreen"
    assert trigger["metadata"]["topic"] == "media.uploads"
    assert trigger["metadata"]["lagThreshold"] == "10"
    assert trigger["authenticationRef"] == {"name": "kafka-auth"}
    assert "HorizontalPodAutoscaler" not in kinds(documents)
    assert "replicas" not in one(documents, "Deployment")["spec"]  # the autoscaler owns it


def test_hpa_scales_on_cpu(chart: helm.Chart) -> None:
    documents = render(chart, SCENARIOS["hpa"])
    hpa = one(documents, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "ScaledObject" not in kinds(documents)


def test_no_autoscaler_by_default(chart: helm.Chart) -> None:
    assert not {"ScaledObject", "HorizontalPodAutoscaler"} & kinds(render(chart, {}))


def test_both_autoscalers_fail_with_a_clear_message(chart: helm.Chart) -> None:
    values = {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}
    with pytest.raises(helm.HelmRenderError, match="mutually exclusive"):
        render(chart, values)


def test_more_replicas_than_partitions_fails(chart: helm.Chart) -> None:
    values = {
        "kafka": {"partitions": 6},
        "autoscaling": {"maxReplicas": 8, "keda": {"enabled": True}},
    }
    with pytest.raises(helm.HelmRenderError, match=r"maxReplicas \(8\) exceeds kafka.partitions"):
        render(chart, values)


# ------------------------------------------------------ monitoring & net --


def test_service_monitor_needs_the_prometheus_operator_api(chart: helm.Chart) -> None:
    values = SCENARIOS["service-monitor"]
    monitor = one(render(chart, values), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert "ServiceMonitor" not in kinds(render(chart, values, api_versions=()))
    assert "ServiceMonitor" not in kinds(render(chart, {}))  # disabled by default


def test_service_exposes_the_metrics_port(chart: helm.Chart) -> None:
    service = one(render(chart, {}), "Service")
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}


def test_network_policy_allows_only_dns_brokers_cache_media_and_scrapes(chart: helm.Chart) -> None:
    policy = one(render(chart, SECRETS), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    dns, kafka, redis, media = policy["egress"]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert kafka["ports"] == [{"protocol": "TCP", "port": 9093}]
    assert kafka["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kafka"
    }
    assert redis["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert media["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    assert media["ports"] == [{"protocol": "TCP", "port": 443}]


def test_pdb_selects_the_pods(chart: helm.Chart) -> None:
    documents = render(chart, {})
    pdb = one(documents, "PodDisruptionBudget")
    labels = one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ---------------------------------------------------------------- schema --

BAD_VALUES = [
    ({"bogus": 1}, "additional properties 'bogus' not allowed"),
    ({"gpu": {"bogus": True}}, "additional properties 'bogus' not allowed"),
    ({"kafka": {"sasl": {"pasword": "x"}}}, "additional properties 'pasword' not allowed"),
    ({"replicaCount": -1}, "/replicaCount': minimum"),
    ({"replicaCount": "2"}, "/replicaCount': got string, want integer"),
    ({"gpu": {"count": "1"}}, "/gpu/count': got string, want integer"),
    ({"gpu": {"count": 0}}, "/gpu/count': minimum"),
    ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
    ({"model": {"source": "s3"}}, "/model/source"),
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"detector": {"device": "gpu"}}, "/detector/device"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"drainSeconds": -5}, "/drainSeconds': minimum"),
    ({"http": {"port": 70000}}, "/http/port': maximum"),
    ({"provenance": {"declaredAiAction": "delete"}}, "/provenance/declaredAiAction'"),
    ({"provenance": {"invalidAction": "Block"}}, "/provenance/invalidAction'"),
    ({"detector": {"reviewAction": "flag"}}, "/detector/reviewAction'"),
    ({"provenance": {"maxManifestMb": 0}}, "/provenance/maxManifestMb': minimum"),
    ({"provenance": {"trustAnchors": {"pem": "x"}}}, "additional properties 'pem' not allowed"),
    ({"provenance": {"trustAnchors": {"secret": {"key": "a/b"}}}}, "/trustAnchors/secret/key'"),
    ({"provenance": {"trustAnchors": {"mountPath": "trust"}}}, "/trustAnchors/mountPath'"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(chart, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "needs kafka.sasl.mechanism"),
        ({"model": {"source": "pvc"}}, "needs model.pvc.claimName"),
        ({"model": {"source": "initContainer"}}, "needs model.initContainer.image.repository"),
        ({"replicaCount": 20}, "replicaCount (20) exceeds kafka.partitions (12)"),
    ],
)
def test_inconsistent_values_fail_rendering(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(chart, values)


def _objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{path}/{index}")


def test_schema_is_strict_at_every_level(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    loose = [
        path for path, node in _objects(schema) if node.get("additionalProperties") is not False
    ]
    assert loose == []
    chart.validate_schema(chart.values)


# ---------------------------------------------------------------- README --


def _value_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of values.yaml; maps with free keys and lists are leaves."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in FREE_MAPS:
            yield from _value_paths(value, f"{path}.")
        else:
            yield path


# Maps whose keys are the user's (labels, selectors): documented as a whole.
FREE_MAPS = {"resources", "requests", "limits", "namespaceSelector", "podSelector", "nodeSelector"}


def test_readme_documents_every_value(chart: helm.Chart) -> None:
    readme = (CHART / "README.md").read_text()
    missing = [path for path in _value_paths(chart.values) if f"`{path}`" not in readme]
    assert missing == [], f"values missing from helm/deepscreen/README.md: {missing}"


# --------------------------------------------------------------- checkov --


def checkov_exceptions() -> dict[str, str]:
    """Check ID → justification, from the README's "Security scan exceptions" section."""
    readme = (CHART / "README.md").read_text()
    section = readme.split("## Security scan exceptions", 1)[1].split("\n## ", 1)[0]
    found = dict(re.findall(r"^\| `(CKV2?_K8S_\d+)` \| (.+?) \|$", section, flags=re.MULTILINE))
    assert found, "no exceptions parsed from the README"
    return found


def _checkov() -> list[str]:
    """checkov from its own environment (`.venv-checkov`, as the README's test command makes it).

    checkov pins networkx<2.7 while scikit-image (dev) needs networkx>=2.8, so it
    cannot live in the dev extra's environment. It is required, not optional: a
    missing checkov fails this test rather than skipping the scan.
    """
    for candidate in (
        REPO / ".venv-checkov" / "bin" / "checkov",
        Path(sys.executable).with_name("checkov"),
    ):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("checkov")
    if found is None:
        pytest.fail(
            "checkov is not installed: python3 -m venv .venv-checkov && "
            ".venv-checkov/bin/pip install checkov"
        )
    return [found]


def test_checkov_finds_nothing_beyond_the_documented_exceptions(
    chart: helm.Chart, tmp_path: Path
) -> None:
    for scenario, values in SCENARIOS.items():
        documents = render(chart, values)
        (tmp_path / f"{scenario}.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    result = subprocess.run(
        [
            *_checkov(),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
            "--no-fail-on-crash",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        (check["check_id"], check["resource"], Path(check["file_path"]).name)
        for each in reports
        for check in each.get("results", {}).get("failed_checks", [])
    ]
    passed = sum(each.get("summary", {}).get("passed", 0) for each in reports)
    assert passed > 0, "checkov checked nothing"
    exceptions = checkov_exceptions()
    unexpected = sorted({f for f in failed if f[0] not in exceptions})
    assert unexpected == [], f"checkov failures not in the README's exceptions: {unexpected}"


SHUTDOWN_MARGIN_S = 5  # the chart's `deepscreen.shutdownMarginSeconds`


@pytest.mark.parametrize("drain", [30, 12.5, 0, 90])
def test_grace_period_is_derived_from_the_drain_and_the_shutdown_teardown_bound(
    chart: helm.Chart, drain: float
) -> None:
    """SIGTERM → exit is at most drain + `SHUTDOWN_TEARDOWN_S`: the pod is given that
    and a margin, rounded up, unless terminationGracePeriodSeconds says more."""
    import math

    from consumer.service import SHUTDOWN_TEARDOWN_S  # (appended; the imports are shared)

    documents = render(chart, {"drainSeconds": drain})
    grace = pod_spec(documents)["terminationGracePeriodSeconds"]
    assert float(environment(documents)["DEEPSCREEN_DRAIN_SECONDS"]) == drain
    assert grace == math.ceil(drain + SHUTDOWN_TEARDOWN_S + SHUTDOWN_MARGIN_S)
    assert grace > drain + SHUTDOWN_TEARDOWN_S
    given = render(chart, {"drainSeconds": drain, "terminationGracePeriodSeconds": 600})
    assert pod_spec(given)["terminationGracePeriodSeconds"] == 600
    too_short = math.floor(drain + SHUTDOWN_TEARDOWN_S)
    if too_short >= 1:
        with pytest.raises(helm.HelmRenderError, match="plus the service's shutdown teardown"):
            render(chart, {"drainSeconds": drain, "terminationGracePeriodSeconds": too_short})
