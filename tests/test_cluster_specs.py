"""The cluster specs in cluster/ parse, validate, and agree with each other and with pyproject.toml.

No Ray instance: the `ray up` YAML is checked against the JSON schema shipped inside the installed ray
package (and by the same prepare/validate functions `ray up` runs); the KubeRay and MLflow manifests are
checked for one image, one set of pins, one entrypoint, token auth, shared checkpoint storage and no
literal secrets; the NetworkPolicy by evaluating its rules for the pods the specs create.
"""

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def _kind(name: str, kind: str) -> dict:
    (doc,) = [d for d in _docs(name) if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def ray_up() -> dict:
    return yaml.safe_load((CLUSTER / "ray-up.yaml").read_text())


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _kind("raycluster.yaml", "RayCluster")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _kind("rayjob.yaml", "RayJob")


@pytest.fixture(scope="module")
def pins() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _pods(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]


def _containers(cluster_spec: dict) -> list[dict]:
    return [c for pod in _pods(cluster_spec) for c in pod["containers"]]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------------------------------------- ray up


def test_ray_up_yaml_matches_the_schema_shipped_with_ray(ray_up):
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    schema = json.loads((Path(spec.origin).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(ray_up, schema)
    bad = {**ray_up, "head_node_typo": "head"}  # the schema forbids unknown keys: the check can fail
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_ray_up_yaml_passes_the_checks_ray_up_runs(ray_up):
    from ray.autoscaler._private.util import prepare_config, validate_config

    filled = prepare_config(ray_up)  # provider defaults merged in, as `ray up` does (no cloud calls)
    validate_config(filled)
    gpu = filled["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1  # autoscaling GPU workers, scale to zero


def test_ray_up_keeps_token_auth_on_and_the_dashboard_on_loopback(ray_up):
    head = " ".join(ray_up["head_start_ray_commands"])
    workers = " ".join(ray_up["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head
    assert "~/.ray/auth_token" in ray_up["file_mounts"]  # the same token on every node


# ------------------------------------------------------------------------------------------- KubeRay


def test_every_spec_runs_one_image_built_on_the_pinned_ray(ray_up, raycluster, rayjob, pins):
    images = {c["image"] for c in _containers(raycluster["spec"])}
    images |= {c["image"] for c in _containers(rayjob["spec"]["rayClusterSpec"])}
    images |= {c["image"] for c in rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]}
    images.add(ray_up["docker"]["image"])
    assert len(images) == 1, images
    (ray_pin,) = [p for p in pins if p.startswith("ray[")]
    version = ray_pin.split("==")[1]
    base = re.search(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{version}-py311")
    assert raycluster["spec"]["rayVersion"] == version


def test_rayjob_creates_the_same_cluster_as_raycluster(raycluster, rayjob):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def test_gpu_worker_group_autoscales(raycluster):
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1


def test_pins_are_pyprojects_everywhere(rayjob, pins):
    shipped = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    inlined = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert shipped["pip"]["packages"] == pins
    assert inlined["pip"]["packages"] == pins


def test_rayjob_runtime_env_is_runtime_env_yaml_with_the_code_from_the_image(rayjob):
    shipped = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    inlined = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert inlined.pop("working_dir") == "/app"  # cluster/Dockerfile's WORKDIR
    assert "WORKDIR /app" in (CLUSTER / "Dockerfile").read_text()
    shipped.pop("working_dir")
    assert inlined == shipped
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**{**inlined, "working_dir": str(ROOT)})  # Ray accepts it (the image's /app is this checkout)


def test_rayjob_entrypoint_is_the_command_gvseg_submit_sends(rayjob):
    from gvseg.cli import build_parser
    from gvseg.config import apply_overrides
    from gvseg.recipes import load_recipe
    from gvseg.runtime.jobs import entrypoint

    command = rayjob["spec"]["entrypoint"]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "gvseg.cli"]
    args = build_parser().parse_args(words[3:])
    assert args.command == "train" and args.address == "auto"
    assert entrypoint(args.recipe, args.sets) == shlex.join(words)
    cfg = apply_overrides(load_recipe(str(ROOT / args.recipe)), args.sets)  # the recipe and keys exist
    assert cfg.runtime.use_gpu and cfg.runtime.num_workers >= 1


def test_kuberay_keeps_token_auth_on_everywhere(raycluster, rayjob):
    specs = [raycluster["spec"], rayjob["spec"]["rayClusterSpec"]]
    containers = [c for s in specs for c in _containers(s)]
    containers += rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
    envs = [_env(c) for c in containers] + [{e["name"]: e for e in s["autoscalerOptions"]["env"]} for s in specs]
    for env in envs:
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # from a Secret, never a literal
    for s in specs:
        assert s["headGroupSpec"]["serviceType"] == "ClusterIP"  # not exposed outside the cluster


def test_checkpoints_go_to_the_shared_volume_on_every_node(raycluster):
    pvc = _kind("raycluster.yaml", "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    shipped = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())["env_vars"]["GVSEG_STORAGE_PATH"]
    for pod in _pods(raycluster["spec"]):
        shared = {v["name"] for v in pod["volumes"]
                  if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]}
        (container,) = pod["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in shared]
        storage = _env(container)["GVSEG_STORAGE_PATH"]["value"]
        assert storage == shipped
        assert any(storage.startswith(m.rstrip("/") + "/") for m in mounts), (storage, mounts)


# -------------------------------------------------------------------------------------- NetworkPolicy

CLIENT = {"gvseg/ray-client": "true"}
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions would need more than this check
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _admits(policies: list[dict], pod: dict, source: dict, port: int) -> bool:
    """Whether NetworkPolicy semantics let a pod of this namespace labelled ``source`` open ``port`` on ``pod``:
    the union of the ingress rules of every policy that selects the pod (open if none does)."""
    chosen = [p["spec"] for p in policies if _matches(p["spec"]["podSelector"], pod)]
    if not chosen:
        return True
    for spec in chosen:
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec.get("ingress", []):
            for peer in rule.get("from", []):
                assert set(peer) == {"podSelector"}, peer  # same namespace only: no namespace or IP blocks
            peers = rule.get("from")
            if peers is not None and not any(_matches(peer["podSelector"], source) for peer in peers):
                continue
            if "ports" not in rule or any(q["port"] == port and q["protocol"] == "TCP" for q in rule["ports"]):
                return True
    return False


def test_networkpolicy_opens_the_head_to_clients_only_and_denies_the_rest(raycluster, rayjob):
    docs = _docs("networkpolicy.yaml")
    assert {d["kind"] for d in docs} == {"NetworkPolicy"} and all("namespace" not in d["metadata"] for d in docs)
    spec = raycluster["spec"]
    # the pods as KubeRay labels them: the templates' labels plus ray.io/cluster and ray.io/node-type
    head = {**spec["headGroupSpec"]["template"]["metadata"]["labels"], "ray.io/cluster": "gvseg",
            "ray.io/node-type": "head"}
    (group,) = spec["workerGroupSpecs"]
    worker = {**group["template"]["metadata"]["labels"], "ray.io/cluster": "gvseg", "ray.io/node-type": "worker"}
    submitter = rayjob["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    # A default deny: a policy selecting every Ray pod with no ingress rule at all.
    assert [d for d in docs if not d["spec"].get("ingress") and _matches(d["spec"]["podSelector"], head)
            and _matches(d["spec"]["podSelector"], worker)]
    for d in docs:  # every policy selects Ray pods, by the label both specs' pod templates carry
        assert _matches(d["spec"]["podSelector"], head) and not _matches(d["spec"]["podSelector"], CLIENT)

    stranger = {"app": "something-else"}
    ray_ports = [6379, 8265, 10001, 52365, 8080, 8076, 10002, 19999, 45678]
    for pod in (head, worker):  # the Ray pods reach each other on every port
        for source in (head, worker):
            assert all(_admits(docs, pod, source, port) for port in ray_ports)
    for port in ray_ports:  # strangers get nowhere; a worker is reachable from Ray pods only
        assert not _admits(docs, head, stranger, port) and not _admits(docs, worker, stranger, port)
        assert not _admits(docs, worker, CLIENT, port) and not _admits(docs, worker, OPERATOR, port)
    # 8265 and 10001 from the client label only (plus the operator's status polls on 8265), nothing else
    for client in (CLIENT, submitter, {**CLIENT, "app": "laptop-proxy"}):
        assert [p for p in ray_ports if _admits(docs, head, client, p)] == [8265, 10001]
    assert [p for p in ray_ports if _admits(docs, head, OPERATOR, p)] == [8265]
    assert not _admits(docs, head, {"gvseg/ray-client": "false"}, 8265)


# ------------------------------------------------------------------------------------------- MLflow


def test_mlflow_server_manifest_serves_the_uri_the_runs_use():
    service = _kind("mlflow-server.yaml", "Service")
    deploy = _kind("mlflow-server.yaml", "Deployment")
    uri = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())["env_vars"]["MLFLOW_TRACKING_URI"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert uri == f"http://{host}:{service['spec']['ports'][0]['port']}"
    assert service["spec"]["type"] == "ClusterIP"
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--app-name=basic-auth" in args and host in args  # auth on; the in-cluster Host is allowed
    assert "--workers" in args


def test_no_literal_secrets_in_any_manifest():
    for name in ["raycluster.yaml", "rayjob.yaml", "mlflow-server.yaml", "networkpolicy.yaml"]:
        for doc in _docs(name):
            text = json.dumps(doc)
            for env in re.findall(r'\{"name": "([A-Z_]*(?:PASSWORD|SECRET|TOKEN|KEY)[A-Z_]*)", "value"', text):
                pytest.fail(f"{name}: {env} has a literal value; use a secretKeyRef")
            assert not re.search(r"://[^/@\s\"]+:[^/@\s\"]+@", text), f"{name}: credentials in a URI"
