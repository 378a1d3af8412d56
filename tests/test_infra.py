"""The deployment in infra/ is checked here, fast (no network, no Ray, no cluster):

* every YAML document under infra/k8s parses; core Kubernetes objects validate strictly against the
  Kubernetes 1.30 schema (kubernetes-validate); KubeRay objects (RayCluster, RayJob, RayCronJob, incl.
  the RayJob template held as text in the nightly ConfigMap) against the field names and types of
  KubeRay's CRDs (trimmed copy in tests/data/kuberay/crd-schemas.yaml), their pod templates as core
  PodTemplates;
* the conventions the issue asks for: one image, rayVersion == the pinned Ray, configs named by
  entrypoints exist, a service account on every pod, requests == limits, GPU tolerations + selector,
  no hand-written `ray start`, token auth, in-tree autoscaling, the nightly job's deadlines;
* each GPU preset fits the node shape of the manifest that runs it;
* infra/stage_models.py's config rewrite, with a fake downloader.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from infra import stage_models  # a script beside the manifests; infra/ is a namespace package from the root
from tests.helpers import REPO as ROOT

INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
SCHEMAS = yaml.safe_load((ROOT / "tests/data/kuberay/crd-schemas.yaml").read_text())
K8S_VERSION = "1.30"
RAY_KINDS = {"RayCluster", "RayJob", "RayCronJob"}
IMAGE_IN_CONTAINER = "/opt/scriptorium/conf/"  # where the image holds the repo's conf/


# ---------------------------------------------------------------------------------------- loading


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for every YAML document under infra/k8s, plus every Kubernetes object held as
    text in a ConfigMap (the nightly RayJob template)."""
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc:
                continue
            where = f"{path.relative_to(ROOT)}#{i}"
            out.append((where, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    inner = yaml.safe_load(text) if key.endswith((".yaml", ".yml")) else None
                    if isinstance(inner, dict) and "kind" in inner:
                        out.append((f"{where}:data.{key}", inner))
    return out


DOCS = _documents()


def _of_kind(*kinds: str) -> list[tuple[str, dict[str, Any]]]:
    return [(w, d) for w, d in DOCS if d.get("kind") in kinds]


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(where, RayClusterSpec) of every RayCluster, RayJob and RayCronJob."""
    out = []
    for where, doc in _of_kind(*RAY_KINDS):
        spec = doc["spec"]
        if doc["kind"] == "RayJob":
            spec = spec["rayClusterSpec"]
        elif doc["kind"] == "RayCronJob":
            spec = spec["jobTemplate"]["rayClusterSpec"]
        out.append((where, spec))
    return out


def _pod_templates() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, role, pod template) of every pod the manifests create: Ray head/worker groups, RayJob
    submitters, CronJob/Job pods."""
    for where, spec in _cluster_specs():
        yield where, "ray-head", spec["headGroupSpec"]["template"]
        for g in spec.get("workerGroupSpecs", []):
            yield where, f"ray-worker:{g['groupName']}", g["template"]
    for where, doc in _of_kind("RayJob", "RayCronJob"):
        job = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]
        if "submitterPodTemplate" in job:
            yield where, "ray-job-submitter", job["submitterPodTemplate"]
    for where, doc in _of_kind("CronJob"):
        yield where, "cronjob", doc["spec"]["jobTemplate"]["spec"]["template"]
    for where, doc in _of_kind("Job", "Deployment", "StatefulSet", "DaemonSet"):
        yield where, doc["kind"].lower(), doc["spec"]["template"]


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _image_variable() -> str:
    m = re.search(r"^SCRIPTORIUM_IMAGE=(\S+)$", (INFRA / "image.env").read_text(), re.M)
    assert m, "infra/image.env must define SCRIPTORIUM_IMAGE"
    return m.group(1)


def _gpus(container: dict[str, Any]) -> float:
    return float((container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


def _cpu(q: Any) -> float:
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def test_manifests_found():
    kinds = {d["kind"] for _, d in DOCS}
    for kind in (
        "RayCluster",
        "RayJob",
        "RayCronJob",
        "CronJob",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "ConfigMap",
        "PodMonitor",
        "PrometheusRule",
    ):
        assert kind in kinds, f"no {kind} under infra/k8s"


# ------------------------------------------------------------------------------ schema validation


def test_core_objects_validate_strictly():
    import kubernetes_validate

    core = [(w, d) for w, d in DOCS if not d["apiVersion"].startswith(("ray.io/", "monitoring.coreos.com/"))]
    assert core
    for where, doc in core:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} ({doc['kind']}): {exc.message} at {list(exc.path)}")


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS["definitions"][schema["$ref"]]
    return schema


def crd_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors of `value` against a trimmed CRD schema: unknown field, wrong type, bad enum, missing
    required field. Pod templates are collected separately (validated with kubernetes-validate)."""
    schema = _resolve(schema)
    if "anyOf" in schema or schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not an int-or-string"]
    typ = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    if typ and not checks[typ](value):
        return [f"{path}: expected {typ}, got {type(value).__name__} {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not one of {schema['enum']}"]
    if typ == "integer" and schema.get("format") == "int32" and not -(2**31) <= value < 2**31:
        return [f"{path}: {value} out of int32 range"]
    errors: list[str] = []
    if typ == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required field {key!r}")
        props = schema.get("properties")
        for key, item in value.items():
            if props is not None:
                if key not in props:
                    errors.append(f"{path}.{key}: unknown field (not in KubeRay's CRD)")
                else:
                    errors += crd_errors(item, props[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                errors += crd_errors(item, schema["additionalProperties"], f"{path}.{key}")
    if typ == "array":
        for i, item in enumerate(value):
            errors += crd_errors(item, schema.get("items", {}), f"{path}[{i}]")
    return errors


def _pod_templates_in(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    schema = _resolve(schema)
    if schema.get("x-scriptorium-validate-as") == "PodTemplate":
        yield path, value
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                yield from _pod_templates_in(item, schema["properties"][key], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _pod_templates_in(item, schema["items"], f"{path}[{i}]")


@pytest.mark.parametrize("where,doc", _of_kind(*RAY_KINDS), ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_objects_match_crds(where, doc):
    import kubernetes_validate

    kind = SCHEMAS["kinds"][doc["kind"]]
    assert doc["apiVersion"] == kind["apiVersion"], where
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, f"{where}: unexpected top-level keys"
    errors = crd_errors(doc["spec"], kind["spec"], "spec")
    assert not errors, f"{where}:\n  " + "\n  ".join(errors)
    templates = list(_pod_templates_in(doc["spec"], kind["spec"], "spec"))
    assert templates, f"{where}: no pod template found"
    for path, template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} {path}: {exc.message} at {list(exc.path)}")


def test_crd_checker_rejects_unknown_fields_and_wrong_types():
    """The checker must fail on the mistakes it exists to catch (so a passing test means something)."""
    _, cluster = _of_kind("RayCluster")[0]
    schema = SCHEMAS["kinds"]["RayCluster"]["spec"]
    assert crd_errors(cluster["spec"], schema, "spec") == []
    bad = copy.deepcopy(cluster["spec"])
    bad["enableInTreeAutoScaling"] = True  # misspelt: silently ignored by an old operator, unknown here
    bad["workerGroupSpecs"][0]["maxReplicas"] = "8"
    bad["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1  # rayStartParams values are strings
    bad["authOptions"] = {"mode": "tokens"}
    del bad["headGroupSpec"]["template"]
    errors = "\n".join(crd_errors(bad, schema, "spec"))
    for needle in (
        "enableInTreeAutoScaling: unknown field",
        "maxReplicas: expected integer",
        "num-gpus: expected string",
        "not one of ['disabled', 'token']",
        "missing required field 'template'",
    ):
        assert needle in errors, errors


# ------------------------------------------------------------------------------------ conventions


def test_one_image_everywhere():
    image = _image_variable()
    name, _, tag = image.rpartition("/")[2].partition(":")
    assert tag and tag != "latest", f"{image}: pin a tag, never :latest"
    seen = 0
    for where, role, template in _pod_templates():
        for c in _containers(template):
            if role == "cronjob":
                # The scheduler pod runs kubectl, the one other image; still pinned.
                assert not c["image"].endswith(":latest") and ":" in c["image"], f"{where}: {c['image']}"
                continue
            assert c["image"] == image, f"{where} {role}/{c['name']}: {c['image']} != {image} (infra/image.env)"
            seen += 1
    assert seen >= 6
    for _, spec in _cluster_specs():
        assert spec.get("autoscalerOptions", {}).get("image", image) == image
    # No other Scriptorium image anywhere in the text (e.g. a stale tag in a comment-free field).
    for path in K8S.rglob("*.yaml"):
        for ref in re.findall(r"image:\s*(\S+)", path.read_text()):
            assert ref == image or not ref.split("/")[-1].startswith(name + ":"), f"{path}: {ref}"


def test_ray_version_is_the_pinned_one():
    pyproject = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject)
    assert m, "pyproject.toml must pin ray"
    pinned = m.group(1)
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(pinned)}$", dockerfile, re.M), "Dockerfile RAY_VERSION"
    for where, spec in _cluster_specs():
        assert spec["rayVersion"] == pinned, f"{where}: rayVersion {spec['rayVersion']} != ray=={pinned}"


def _entrypoints() -> list[tuple[str, str]]:
    out = []
    for where, doc in _of_kind("RayJob", "RayCronJob"):
        job = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]
        out.append((where, job["entrypoint"]))
    return out


def _preset_of_entrypoint(entrypoint: str) -> tuple[Path, list[str]]:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["scriptorium", "run"], entrypoint
    config = argv[2]
    assert config.startswith(IMAGE_IN_CONTAINER), f"{config}: the image holds presets in {IMAGE_IN_CONTAINER}"
    return ROOT / "conf" / config[len(IMAGE_IN_CONTAINER) :], argv[3:]


def test_entrypoints_name_existing_configs_that_load():
    from pipeline.config import load_config

    assert _entrypoints()
    for where, entrypoint in _entrypoints():
        path, overrides = _preset_of_entrypoint(entrypoint)
        assert path.is_file(), f"{where}: {path.relative_to(ROOT)} does not exist"
        cfg = load_config(path, overrides)  # the overrides must be valid keys too
        assert cfg.input.uri and cfg.output.uri
    for where, doc in _of_kind("RayCluster", "RayCronJob", "RayJob"):
        preset = (doc.get("metadata", {}).get("annotations") or {}).get("scriptorium.io/preset")
        if preset:
            assert (ROOT / preset).is_file(), f"{where}: annotated preset {preset} does not exist"


def test_every_pod_has_a_service_account():
    for where, role, template in _pod_templates():
        sa = template["spec"].get("serviceAccountName")
        assert sa, f"{where} {role}: no serviceAccountName"
        if role.startswith("ray-"):
            assert sa == "scriptorium", f"{where} {role}: Ray pods run as the scriptorium account"
    accounts = {d["metadata"]["name"] for _, d in _of_kind("ServiceAccount")}
    assert "scriptorium" in accounts
    sa = next(d for _, d in _of_kind("ServiceAccount") if d["metadata"]["name"] == "scriptorium")
    assert any("role-arn" in k or "gcp-service-account" in k for k in sa["metadata"].get("annotations", {}))


def _assert_guaranteed(resources: dict[str, Any], where: str) -> None:
    req, lim = resources.get("requests"), resources.get("limits")
    assert req and lim, f"{where}: requests and limits are both needed"
    assert {"cpu", "memory"} <= set(lim), f"{where}: cpu and memory limits are needed"
    assert req == lim, f"{where}: requests {req} != limits {lim}"


def test_requests_equal_limits_on_every_container():
    for where, role, template in _pod_templates():
        for c in _containers(template):
            _assert_guaranteed(c.get("resources", {}), f"{where} {role}/{c['name']}")
    for where, spec in _cluster_specs():
        if spec.get("enableInTreeAutoscaling"):
            _assert_guaranteed(spec["autoscalerOptions"]["resources"], f"{where} autoscaler")


def test_ray_is_started_by_kuberay_from_ray_start_params():
    for where, role, template in _pod_templates():
        for c in _containers(template):
            text = " ".join(map(str, c.get("command", []) + c.get("args", [])))
            assert "ray start" not in text, f"{where} {role}/{c['name']}: hand-written `ray start`"
            if role.startswith("ray-head") or role.startswith("ray-worker"):
                assert "command" not in c and "args" not in c, f"{where} {role}: KubeRay sets the command"
    for where, spec in _cluster_specs():
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: the head must not run tasks"
        assert head["rayStartParams"].get("metrics-export-port") == "8080", where
        ports = {p["containerPort"]: p.get("name") for p in head["template"]["spec"]["containers"][0]["ports"]}
        assert ports == {6379: "gcs-server", 8265: "dashboard", 10001: "client", 8080: "metrics"}, where
        for g in spec["workerGroupSpecs"]:
            assert g["rayStartParams"].get("metrics-export-port") == "8080", f"{where} {g['groupName']}"
            wports = {p["containerPort"]: p.get("name") for p in g["template"]["spec"]["containers"][0]["ports"]}
            assert wports.get(8080) == "metrics", f"{where} {g['groupName']}"


def test_token_auth_and_in_tree_autoscaling():
    for where, spec in _cluster_specs():
        assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: Ray token auth must be on"
        assert spec.get("enableInTreeAutoscaling") is True, f"{where}: in-tree autoscaling"
        for g in spec["workerGroupSpecs"]:
            assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], f"{where} {g['groupName']}"


def test_gpu_groups_tolerate_and_select_gpu_nodes():
    gpu_groups = 0
    for where, spec in _cluster_specs():
        assert _gpus(spec["headGroupSpec"]["template"]["spec"]["containers"][0]) == 0, f"{where}: CPU head"
        for g in spec["workerGroupSpecs"]:
            pod = g["template"]["spec"]
            if not any(_gpus(c) for c in pod["containers"]):
                continue
            gpu_groups += 1
            tol = pod.get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tol), f"{where} {g['groupName']}: GPU toleration"
            assert pod.get("nodeSelector"), f"{where} {g['groupName']}: accelerator nodeSelector"
            mounts = {m["mountPath"]: m for c in pod["containers"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/models", {}).get("readOnly") is True, f"{where}: /models read-only"
            claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            assert any(c["claimName"] == "scriptorium-models" for c in claims), where
    assert gpu_groups >= 4  # two RayClusters, the RayJob template, the RayCronJob


def test_model_cache_claim_is_read_only_many():
    pvcs = [d for _, d in _of_kind("PersistentVolumeClaim") if d["metadata"]["name"] == "scriptorium-models"]
    assert pvcs and pvcs[0]["spec"]["accessModes"] == ["ReadOnlyMany"]


# ---------------------------------------------------------------------------------- nightly + alerts


def _nightly_rayjob() -> dict[str, Any]:
    ((_, doc),) = [(w, d) for w, d in _of_kind("RayJob") if ":data." in w]
    return doc


def test_nightly_rayjob():
    job = _nightly_rayjob()
    spec = job["spec"]
    assert job["metadata"]["generateName"] == "scriptorium-nightly-"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert 0 < spec["activeDeadlineSeconds"] < 24 * 3600, "a hung night must end before the next starts"
    assert spec["backoffLimit"] >= 0
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["scriptorium", "run", "/opt/scriptorium/conf/nemo-gpu.yaml"]
    assert any(a.startswith("input.uri=") for a in argv) and any(a.startswith("output.uri=") for a in argv)
    # Same cluster shape as the long-lived RayCluster of the same preset, and the RayCronJob variant
    # runs exactly the same RayJob.
    ((_, cluster),) = [(w, d) for w, d in _of_kind("RayCluster") if d["metadata"]["name"] == "scriptorium"]
    assert spec["rayClusterSpec"] == cluster["spec"], "nightly rayClusterSpec drifted from raycluster.yaml"
    ((_, cron),) = _of_kind("RayCronJob")
    assert cron["spec"]["jobTemplate"] == spec, "raycronjob.yaml's jobTemplate drifted from the nightly RayJob"
    assert cron["metadata"]["name"] == "scriptorium-nightly"  # its RayJobs match the alerts' name prefix


def test_nightly_cronjob_creates_the_rayjob():
    ((_, cron),) = _of_kind("CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    (c,) = pod["containers"]
    argv = c.get("command", []) + c["args"]
    assert argv[-3:-1] == ["create", "-f"], argv
    mounted = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    path = Path(argv[-1])
    volume = next(v for v in pod["volumes"] if v["name"] == mounted[str(path.parent)])
    ((_, cm),) = [(w, d) for w, d in _of_kind("ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"]]
    assert path.name in cm["data"]
    # RBAC: the CronJob's account may create rayjobs.
    sa = pod["serviceAccountName"]
    bindings = [d for _, d in _of_kind("RoleBinding") if any(s["name"] == sa for s in d["subjects"])]
    roles = {d["metadata"]["name"]: d for _, d in _of_kind("Role")}
    assert any(
        "create" in r["verbs"] and "rayjobs" in r["resources"] and "ray.io" in r["apiGroups"]
        for b in bindings
        for r in roles[b["roleRef"]["name"]]["rules"]
    ), f"{sa} cannot create rayjobs"


def test_monitoring_scrapes_ray_pods_and_alerts():
    ((_, pm),) = _of_kind("PodMonitor")
    selector = pm["spec"]["selector"]["matchLabels"]
    for where, role, template in _pod_templates():
        if role.startswith(("ray-head", "ray-worker")):
            labels = template.get("metadata", {}).get("labels", {})
            assert selector.items() <= labels.items(), f"{where} {role}: not selected by the PodMonitor"
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
    ((_, rule),) = _of_kind("PrometheusRule")
    rules = {r.get("alert") or r.get("record"): r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert 'deployment_status="Failed"' in rules["ScriptoriumNightlyFailed"]
    assert "26 * 3600" in rules["ScriptoriumNightlyNoSuccess"]
    # Ray exports Counter("scriptorium_files") as ray_scriptorium_files_total (ray_ prefix, _total suffix).
    assert 'ray_scriptorium_files_total{status="error"}' in rules["ScriptoriumFilesFailed"]
    for expr in rules.values():
        assert expr.count("(") == expr.count(")"), expr


# ------------------------------------------------------------------------- presets fit node shapes


def _preset_clusters() -> list[tuple[str, Path, dict[str, Any]]]:
    """(where, preset, RayClusterSpec) for every Ray object whose preset is known."""
    out = []
    for where, doc in _of_kind(*RAY_KINDS):
        if doc["kind"] == "RayCluster":
            preset = (doc["metadata"].get("annotations") or {}).get("scriptorium.io/preset")
            assert preset, f"{where}: annotate scriptorium.io/preset with the preset this shape is for"
            out.append((where, ROOT / preset, doc["spec"]))
        else:
            job = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]
            out.append((where, _preset_of_entrypoint(job["entrypoint"])[0], job["rayClusterSpec"]))
    return out


@pytest.mark.parametrize("where,preset,spec", _preset_clusters(), ids=lambda x: x if isinstance(x, str) else "")
def test_preset_fits_its_node_shape(where, preset, spec):
    from pipeline.config import Resources, load_config

    if not preset.exists():
        pytest.skip(f"{preset.relative_to(ROOT)} is not written yet")
    cfg = load_config(preset)
    (group,) = [g for g in spec["workerGroupSpecs"] if any(_gpus(c) for c in g["template"]["spec"]["containers"])]
    ray_c = group["template"]["spec"]["containers"][0]
    params = group["rayStartParams"]
    pod_cpus = float(params.get("num-cpus", _cpu(ray_c["resources"]["limits"]["cpu"])))
    pod_gpus = float(params.get("num-gpus", _gpus(ray_c)))
    name = preset.relative_to(ROOT)
    rec, seg, dec = cfg.recording_stage.resources, cfg.segment_stage.resources, cfg.decode.resources

    # Every actor / task fits one GPU pod (else it waits forever: the head has num-cpus 0).
    for stage, r in (("recording_stage", rec), ("segment_stage", seg), ("decode", dec)):
        assert r.num_cpus <= pod_cpus, f"{name} {stage}: {r.num_cpus} CPUs > {pod_cpus} per pod ({where})"
        assert r.num_gpus <= pod_gpus, f"{name} {stage}: {r.num_gpus} GPUs > {pod_gpus} per pod ({where})"

    # The GPU fractions fill a pod's GPUs exactly: k (recording, segment) pairs per pod, and the pairs'
    # CPUs fit beside them with room for at least one decode task.
    pair_gpus = rec.num_gpus + seg.num_gpus
    assert pair_gpus > 0
    k = pod_gpus / pair_gpus
    assert abs(k - round(k)) < 1e-9, (
        f"{name}: recording {rec.num_gpus} + segment {seg.num_gpus} GPUs per pair do not fill {pod_gpus} GPUs per pod"
    )
    if pod_gpus == 1:
        assert rec.num_gpus + seg.num_gpus == pytest.approx(1.0), f"{name}: one GPU = one recording + one segment actor"
    k = round(k)
    spare = pod_cpus - k * (rec.num_cpus + seg.num_cpus)
    assert spare >= dec.num_cpus, (
        f"{name}: {k} actor pairs use {pod_cpus - spare} of {pod_cpus} CPUs, no CPU left for a decode task"
    )

    if "max_pool_size" not in Resources.model_fields:
        pytest.skip("pipeline.config.Resources has no max_pool_size yet: the pool-size-vs-cluster check needs it")
    max_gpus = group["maxReplicas"] * pod_gpus
    asked = sum((r.max_pool_size or r.pool_size) * r.num_gpus for r in (rec, seg))
    assert asked <= max_gpus + 1e-9, f"{name}: pools at max ask {asked} GPUs, the cluster has {max_gpus} ({where})"
    for stage, r in (("recording_stage", rec), ("segment_stage", seg)):
        assert (r.max_pool_size or r.pool_size) <= group["maxReplicas"] * k, (
            f"{name} {stage}: more actors than GPU slots"
        )


# ------------------------------------------------------------------------------- stage_models.py

PRESET = """\
# a comment the operator wrote
input:
  uri: s3://in/
recording_stage:
  resources: {num_cpus: 1.0, num_gpus: 0.25}
  vad:
    backend: nemo
    model: vad_multilingual_frame_marblenet   # frame MarbleNet
    threshold: 0.5
  diarization:
    enabled: true
    backend: nemo
    model: /models/diar_sortformer_4spk-v1.nemo
    sha256: null          # filled by stage_models
segment_stage:
  lid:
    backend: nemo
    model: s3://bucket/ambernet.nemo
    sha256: null
  asr:
    backend: nemo
    model: nvidia/parakeet-tdt-0.6b-v3  # Parakeet v3
    sha256: null
output:
  uri: s3://out/
"""

#: The same preset in the flat layout before issue 15 (an operator's own preset may still be one).
OLD_PRESET = """\
input:
  uri: s3://in/
output:
  uri: s3://out/
vad:
  backend: nemo
  model: vad_multilingual_frame_marblenet   # frame MarbleNet
asr:
  backend: nemo
  model: nvidia/parakeet-tdt-0.6b-v3
  sha256: null
"""

VAD, DIAR, LID, ASR = "recording_stage.vad", "recording_stage.diarization", "segment_stage.lid", "segment_stage.asr"


def _at(data, dotted):
    for part in dotted.split("."):
        data = data[part]
    return data


def test_plan_staging_picks_pretrained_names_and_unfilled_volume_paths():
    plan = stage_models.plan_staging(yaml.safe_load(PRESET))
    assert [(m.section, m.source, m.class_name, m.path) for m in plan] == [
        (
            VAD,
            "vad_multilingual_frame_marblenet",
            "EncDecFrameClassificationModel",
            "/models/vad_multilingual_frame_marblenet.nemo",
        ),
        (DIAR, "diar_sortformer_4spk-v1", "SortformerEncLabelModel", "/models/diar_sortformer_4spk-v1.nemo"),
        # lid is an s3:// file: pipeline/models.py fetches and verifies it, nothing to stage
        (ASR, "nvidia/parakeet-tdt-0.6b-v3", "ASRModel", "/models/parakeet-tdt-0.6b-v3.nemo"),
    ]
    assert stage_models.nemo_class_name("diarization", "titanet_large") == "EncDecSpeakerLabelModel"
    assert stage_models.nemo_class_name(DIAR, "titanet_large") == "EncDecSpeakerLabelModel"
    assert stage_models.nemo_class_name(LID, "langid_ambernet") == "EncDecSpeakerLabelModel"
    off = yaml.safe_load(PRESET)
    off["recording_stage"]["diarization"]["enabled"] = False
    assert DIAR not in [m.section for m in stage_models.plan_staging(off)]
    with pytest.raises(ValueError):
        stage_models.file_name("nvidia/not a file name")
    escape = yaml.safe_load(PRESET)
    escape["segment_stage"]["asr"]["model"] = "/models/../etc/asr.nemo"
    with pytest.raises(ValueError, match="leaves"):
        stage_models.plan_staging(escape)
    # --pretrained SECTION=NAME: the dotted section, or its last name
    staged = yaml.safe_load(PRESET)
    staged["segment_stage"]["asr"]["model"] = "/models/asr.nemo"
    for key in (ASR, "asr"):
        (asr,) = [m for m in stage_models.plan_staging(staged, pretrained={key: "nvidia/x"}) if m.section == ASR]
        assert asr.source == "nvidia/x"


def test_plan_and_rewrite_a_preset_of_the_old_flat_layout():
    plan = stage_models.plan_staging(yaml.safe_load(OLD_PRESET))
    assert [m.section for m in plan] == ["vad", "asr"]
    out = stage_models.rewrite_preset(OLD_PRESET, {m.section: (m.path, "d" * 64) for m in plan})
    data = yaml.safe_load(out)
    assert data["asr"] == {"backend": "nemo", "model": "/models/parakeet-tdt-0.6b-v3.nemo", "sha256": "d" * 64}


def test_rewrite_preset_fills_models_and_keeps_everything_else():
    a, b = "a" * 64, "b" * 64
    out = stage_models.rewrite_preset(PRESET, {VAD: ("/models/vad.nemo", a), ASR: ("/models/asr.nemo", b)})
    data = yaml.safe_load(out)
    assert _at(data, VAD) == {"backend": "nemo", "model": "/models/vad.nemo", "sha256": a, "threshold": 0.5}
    assert _at(data, ASR)["model"] == "/models/asr.nemo" and _at(data, ASR)["sha256"] == b
    assert _at(data, LID) == _at(yaml.safe_load(PRESET), LID)
    assert _at(data, DIAR) == _at(yaml.safe_load(PRESET), DIAR)  # its own model/sha256 keys untouched
    # Comments survive; the inserted sha256 sits right after model, at the section's indentation.
    assert out.startswith("# a comment the operator wrote\n")
    assert "    model: /models/vad.nemo   # frame MarbleNet\n    sha256: " + a in out
    assert "# Parakeet v3" in out
    with pytest.raises(ValueError, match="sha256"):
        stage_models.rewrite_preset(PRESET, {VAD: ("/models/vad.nemo", "not-a-digest")})
    with pytest.raises(ValueError, match="not found"):
        stage_models.rewrite_preset(PRESET, {"segment_stage.punctuation": ("/models/p.nemo", a)})


def test_stage_with_a_fake_downloader(tmp_path):
    import hashlib

    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET)
    calls = []

    def fake_download(model, dest):
        calls.append((model.section, model.source, model.class_name))
        dest.write_bytes(f"weights of {model.source}".encode())

    volume = tmp_path / "volume"
    staged = stage_models.stage(preset, volume, tmp_path / "out.yaml", download=fake_download, log=lambda s: None)
    assert [c[0] for c in calls] == [VAD, DIAR, ASR]
    expect = hashlib.sha256(b"weights of nvidia/parakeet-tdt-0.6b-v3").hexdigest()
    assert staged[ASR] == ("/models/parakeet-tdt-0.6b-v3.nemo", expect)
    assert (volume / "parakeet-tdt-0.6b-v3.nemo").stat().st_mode & 0o777 == 0o644
    assert not list(volume.glob(".*partial"))
    out = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert _at(out, ASR)["sha256"] == expect and _at(out, DIAR)["model"] == "/models/diar_sortformer_4spk-v1.nemo"

    # The staged preset is a valid config whose model files verify against their sha256.
    from pipeline.config import load_config
    from pipeline.models import sha256_file

    cfg = load_config(tmp_path / "out.yaml")
    assert cfg.segment_stage.asr.sha256 == sha256_file(volume / "parakeet-tdt-0.6b-v3.nemo")

    # Idempotent: staging again downloads nothing and writes the same preset.
    calls.clear()
    again = stage_models.stage(preset, volume, tmp_path / "again.yaml", download=fake_download, log=lambda s: None)
    assert calls == [] and again == staged
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "out.yaml").read_text()


def test_shipped_presets_can_be_staged():
    """The rewrite works on the real GPU presets (their comments and layout), not only on the sample."""
    for preset in sorted((ROOT / "conf").glob("nemo-gpu*.yaml")):
        text = preset.read_text()
        plan = stage_models.plan_staging(yaml.safe_load(text))
        assert {m.section for m in plan} >= {VAD, ASR}, preset.name
        out = stage_models.rewrite_preset(text, {m.section: (m.path, "c" * 64) for m in plan})
        data = yaml.safe_load(out)
        for m in plan:
            assert _at(data, m.section)["model"] == m.path and _at(data, m.section)["sha256"] == "c" * 64
