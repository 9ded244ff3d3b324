"""The Helm chart ``charts/chorus``, rendered by the real helm and checked with real schemas.

Every rendered object is validated strictly against the Kubernetes OpenAPI schemas of
1.30 and of the newest version kubernetes-validate ships; sample TTSVoices/TTSServices
(and the YAML that NOTES.txt tells users to apply) against the CRDs' openAPIV3Schema.
helm comes from :mod:`tests.tools`; without it these tests fail, they never skip.
"""

from __future__ import annotations

import copy
import importlib
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import HELM_MISSING, REPO, find_helm

# Neither package ships type information; imported as modules of unknown shape.
_kv: Any = importlib.import_module("kubernetes_validate")
_kv_utils: Any = importlib.import_module("kubernetes_validate.utils")
_jsonschema: Any = importlib.import_module("jsonschema")

CHART = REPO / "charts" / "chorus"
RELEASE = "chorus"
RELEASE_NAMESPACE = "chorus-system"
FULLNAME = "chorus"  # the release name contains the chart name
KUBE_VERSIONS = ["1.30", _kv_utils.latest_version()]
APP_VERSION = "0.1.0"
GROUP = "tts.chorus.dev"

Doc = dict[str, Any]
Helm = Callable[..., "subprocess.CompletedProcess[str]"]

# Every feature on: namespaced mode over two namespaces, samples, custom images...
FULL_VALUES: Doc = {
    "nameOverride": "speech-operator",
    "commonLabels": {"team": "voice", "cost-center": "home"},
    "image": {"repository": "registry.example.com:5000/chorus/operator", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "serverImage": {"repository": "registry.example.com:5000/chorus/server", "tag": "1.2.3-gpu",
                    "pullPolicy": "IfNotPresent"},
    "watchNamespaces": ["speech", "lab"],
    "resyncInterval": 7.5,
    "logLevel": "DEBUG",
    "hfEndpoint": "https://hf-mirror.example",
    "rbac": {"create": True},
    "serviceAccount": {"create": True, "name": "chorus-op",
                       "annotations": {"example.com/role": "tts"}},
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"},
                  "limits": {"cpu": "1", "memory": "512Mi"}},
    "podAnnotations": {"prometheus.io/scrape": "false"},
    "podLabels": {"tier": "control"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tts",
                     "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
    "samples": {
        "enabled": True,
        "voices": [
            {"name": "en-us-amy-medium", "namespace": "speech",
             "labels": {"tts.chorus.dev/tier": "household"},
             "spec": {"voice": "en_US-amy-medium", "engine": "piper",
                      "source": {"huggingFace": {"revision": "main"}}}},
            {"name": "de-de-thorsten", "namespace": "lab",
             "spec": {"voice": "de_DE-thorsten-medium",
                      "source": {"url": {"model": "https://example.com/v.onnx",
                                         "config": "https://example.com/v.onnx.json"}},
                      "sha256": {"model": "a" * 64, "config": "b" * 64}}},
        ],
        "services": [
            {"name": "speech", "namespace": "speech",
             "spec": {"defaultVoice": "en_US-amy-medium",
                      "voices": {"selector": {"matchLabels": {"tts.chorus.dev/tier": "household"}}},
                      "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
                      "storage": {"type": "EmptyDir", "size": "1Gi"},
                      "server": {"resources": {"requests": {"cpu": "500m", "memory": 1024}},
                                 "wyoming": {"port": 10200}}}},
            {"name": "lab-speech", "namespace": "lab",
             "spec": {"defaultVoice": "de_DE-thorsten-medium",
                      "voices": {"names": ["de-de-thorsten"]}, "replicas": 1}},
        ],
    },
}
FULL_NAME_WITH_OVERRIDE = f"{RELEASE}-speech-operator"

# The rules the operator needs on Chorus objects and their children (ClusterRole in
# cluster-wide mode, a Role per watched namespace otherwise), as (groups, resources, verbs).
Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
NAMESPACED_RULES: list[Rule] = [
    ((GROUP,), ("ttsvoices", "ttsservices"), ("get", "list", "watch", "patch")),
    ((GROUP,), ("ttsvoices/status", "ttsservices/status"), ("get", "patch")),
    (("",), ("configmaps", "services"), ("get", "create", "patch")),
    (("",), ("persistentvolumeclaims",), ("get", "create", "patch", "delete")),
    (("apps",), ("deployments",), ("get", "list", "watch", "create", "patch")),
    (("autoscaling",), ("horizontalpodautoscalers",), ("get", "create", "patch", "delete")),
    (("policy",), ("poddisruptionbudgets",), ("get", "create", "patch", "delete")),
    (("monitoring.coreos.com",), ("podmonitors",), ("get", "create", "patch", "delete")),
    (("",), ("pods",), ("list",)),
    (("",), ("events",), ("create",)),
]
CRD_RULE: Rule = (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"))
NAMESPACES_RULE: Rule = (("",), ("namespaces",), ("list", "watch"))


# --- helm --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run the real helm with its config, cache and data in a temporary folder."""
    binary = find_helm()
    if binary is None:
        pytest.fail(HELM_MISSING, pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }

    def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                        f"{proc.stdout}\n{proc.stderr}", pytrace=False)
        return proc

    return run


def test_helm_is_the_pinned_v3(helm: Helm) -> None:
    assert re.match(r"v3\.\d+\.\d+", helm("version", "--short").stdout), "helm 3 is required"


@pytest.fixture(scope="module")
def full_values_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def render(helm: Helm, full_values_file: Path) -> Callable[..., list[Doc]]:
    """``render("full", "--set", ...)``: the objects ``helm template`` prints (CRDs included)."""
    cache: dict[tuple[str, ...], list[Doc]] = {}

    def run(preset: str = "default", *extra: str) -> list[Doc]:
        key = (preset, *extra)
        if key not in cache:
            args: list[str | Path] = ["template", RELEASE, CHART, "--namespace",
                                      RELEASE_NAMESPACE, "--include-crds"]
            if preset == "full":
                args += ["--values", full_values_file]
            out = helm(*args, *extra).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return copy.deepcopy(cache[key])

    return run


def only(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = only(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- lint and schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["default", "full"])
def test_lint_strict(helm: Helm, full_values_file: Path, preset: str) -> None:
    args: list[str | Path] = ["lint", "--strict", CHART, "--namespace", RELEASE_NAMESPACE]
    if preset == "full":
        args += ["--values", full_values_file]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def _crd_schemas() -> dict[str, Doc]:
    """kind -> openAPIV3Schema of the chart's CRDs, as JSON Schema (x-kubernetes-* gone)."""
    schemas = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = crd["spec"]["versions"]
        schemas[crd["spec"]["names"]["kind"]] = _json_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("exclusiveMinimum") is True:  # OpenAPI v3.0's boolean form
        out["exclusiveMinimum"] = out.pop("minimum")
    return out


CRD_SCHEMAS = _crd_schemas()


def validate_custom(doc: Doc) -> None:
    assert doc["apiVersion"] == f"{GROUP}/v1alpha1"
    schema = CRD_SCHEMAS[doc["kind"]]
    _jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(_jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    name = doc["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253


def validate_builtin(doc: Doc) -> None:
    for version in KUBE_VERSIONS:
        try:
            _kv.validate(doc, version, strict=True)
        except _kv_utils.ValidationError as err:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes "
                        f"{version}: {'.'.join(map(str, err.path))}: {err.message}")


def test_the_validators_catch_mistakes(render: Callable[..., list[Doc]]) -> None:
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy_"] = "Always"
    with pytest.raises(_kv_utils.ValidationError):
        _kv.validate(deployment, KUBE_VERSIONS[0], strict=True)
    voice = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "TTSVoice", "metadata": {"name": "v"},
             "spec": {"voice": "../x", "source": {"huggingFace": {"repo": "not a repo"}}}}
    with pytest.raises(AssertionError, match="repo"):
        validate_custom(voice)


@pytest.mark.parametrize("preset", ["default", "full"])
def test_every_rendered_object_is_valid(render: Callable[..., list[Doc]], preset: str) -> None:
    docs = render(preset)
    kinds = {doc["kind"] for doc in docs}
    assert {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "Deployment"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith(f"{GROUP}/"):
            validate_custom(doc)
        else:
            validate_builtin(doc)
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] != "CustomResourceDefinition":
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/instance"] == RELEASE
        if preset == "full" and doc["kind"] != "CustomResourceDefinition":
            assert labels["team"] == "voice"


def test_samples_are_off_by_default_and_valid_when_on(render: Callable[..., list[Doc]]) -> None:
    assert not [doc for doc in render() if doc["apiVersion"].startswith(GROUP)]
    samples = [doc for doc in render("default", "--set", "samples.enabled=true")
               if doc["apiVersion"].startswith(GROUP)]
    assert [(doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"])
            for doc in samples] == [("TTSService", "speech", RELEASE_NAMESPACE),
                                    ("TTSVoice", "en-us-amy-medium", RELEASE_NAMESPACE)]
    for doc in samples:
        validate_custom(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/component"] == "sample"
    full = [doc for doc in render("full") if doc["apiVersion"].startswith(GROUP)]
    assert sorted((doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in full) == [
        ("lab", "de-de-thorsten"), ("lab", "lab-speech"),
        ("speech", "en-us-amy-medium"), ("speech", "speech")]
    voice = next(doc for doc in full if doc["metadata"]["name"] == "en-us-amy-medium")
    assert voice["metadata"]["labels"]["tts.chorus.dev/tier"] == "household"


def test_chart_crds_are_byte_identical_copies() -> None:
    top = sorted(path.name for path in (REPO / "crds").glob("*.yaml"))
    assert top == ["ttsservices.yaml", "ttsvoices.yaml"]
    assert sorted(path.name for path in (CHART / "crds").iterdir()) == top
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/chorus/crds/{name} differs from crds/{name}: cp crds/*.yaml "
            "charts/chorus/crds/")


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "watchNamespaces={speech,Not_A_Namespace}"], "watchNamespaces.1"),
    (["--set", "resyncInterval=0"], "resyncInterval"),
    (["--set", "logLevel=LOUD"], "logLevel"),
    (["--set", "hfEndpoint=ftp://mirror"], "hfEndpoint"),
    (["--set", "image.tag=123"], "image.tag"),
    (["--set", "serverImage.tag=2"], "serverImage.tag"),
    (["--set", "image.repository=ghcr.io/x/y:1.0"], "image.repository"),
    (["--set", "watchNamespace={speech}"], "watchNamespace"),
    (["--set", "rbac.create=maybe"], "rbac.create"),
    (["--set", "samples.enabled=true", "--set", "samples.services[0].name=Speech"],
     "samples.services.0"),
    (["--set", "samples.voices[0].spec=null"], "samples.voices.0"),
])
def test_values_schema_rejects_mistakes(helm: Helm, args: list[str], message: str) -> None:
    proc = helm("template", RELEASE, CHART, *args, check=False)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_values_schema_accepts_string_tags(render: Callable[..., list[Doc]]) -> None:
    # --set makes 0.5 a string (helm parses only integers); --set-json keeps the number.
    docs = render("default", "--set-string", "image.tag=123", "--set-json", "resyncInterval=0.5")
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/chorus-tts/chorus-operator:123"
    assert container["args"][container["args"].index("--resync-interval") + 1] == "0.5"


# --- the operator Deployment -----------------------------------------------------------------


def _container(deployment: Doc) -> Doc:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _assert_secure(deployment: Doc) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(deployment)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc and "add" not in sc["capabilities"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports.get(probe["port"], probe["port"]) == 8080
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume
    assert container["command"] == ["chorus"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()


def test_default_deployment(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    _assert_secure(deployment)
    assert deployment["metadata"]["name"] == FULLNAME
    assert deployment["metadata"]["namespace"] == RELEASE_NAMESPACE
    container = _container(deployment)
    assert container["image"] == f"ghcr.io/chorus-tts/chorus-operator:{APP_VERSION}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == [
        "operator", "--liveness", "http://0.0.0.0:8080/healthz",
        "--server-image", f"ghcr.io/chorus-tts/chorus-server:{APP_VERSION}",
        "--resync-interval", "15", "--log-level", "INFO"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"memory": "256Mi"}}
    pod = deployment["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets",
                "priorityClassName"):
        assert key not in pod
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    account = one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"] == FULLNAME
    assert account["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert account.get("automountServiceAccountToken", True) is True


def test_full_deployment(render: Callable[..., list[Doc]]) -> None:
    docs = render("full")
    deployment = one(docs, "Deployment")
    _assert_secure(deployment)
    assert deployment["metadata"]["name"] == FULL_NAME_WITH_OVERRIDE
    container = _container(deployment)
    assert container["image"] == "registry.example.com:5000/chorus/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == [
        "operator", "--liveness", "http://0.0.0.0:8080/healthz",
        "--server-image", "registry.example.com:5000/chorus/server:1.2.3-gpu",
        "--image-pull-policy", "IfNotPresent",
        "--resync-interval", "7.5", "--log-level", "DEBUG",
        "--hf-endpoint", "https://hf-mirror.example",
        "--namespace", "speech", "--namespace", "lab"]
    assert container["resources"] == FULL_VALUES["resources"]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets",
                "priorityClassName"):
        assert pod[key] == FULL_VALUES[key]
    assert template["metadata"]["annotations"] == FULL_VALUES["podAnnotations"]
    assert template["metadata"]["labels"]["tier"] == "control"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "speech-operator"
    assert pod["serviceAccountName"] == "chorus-op"
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["name"] == "chorus-op"
    assert account["metadata"]["annotations"] == {"example.com/role": "tts"}


def test_pod_labels_never_override_the_selector(render: Callable[..., list[Doc]]) -> None:
    docs = render("default", "--set", "podLabels.app\\.kubernetes\\.io/component=evil",
                  "--set", "commonLabels.app\\.kubernetes\\.io/managed-by=me")
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "operator"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    validate_builtin(deployment)


# --- RBAC ------------------------------------------------------------------------------------


def _rules(role: Doc) -> list[Rule]:
    return [(tuple(rule["apiGroups"]), tuple(rule["resources"]), tuple(rule["verbs"]))
            for rule in role["rules"]]


def _assert_no_wildcards(docs: list[Doc]) -> None:
    for doc in docs:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(field, [])), (doc, rule)
            assert "nonResourceURLs" not in rule
            assert not {"secrets"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_cluster_wide_rbac(render: Callable[..., list[Doc]]) -> None:
    docs = render()
    assert not only(docs, "Role") and not only(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    assert sorted(_rules(role)) == sorted([CRD_RULE, NAMESPACES_RULE, *NAMESPACED_RULES])
    assert not [rule for rule in _rules(role) if "kopf.dev" in rule[0]]  # --standalone
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                    "namespace": RELEASE_NAMESPACE}]
    _assert_no_wildcards(docs)


def test_namespaced_rbac(render: Callable[..., list[Doc]]) -> None:
    docs = render("full")
    cluster_role = one(docs, "ClusterRole")
    assert _rules(cluster_role) == [CRD_RULE]
    cluster_binding = one(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": "chorus-op", "namespace": RELEASE_NAMESPACE}
    assert cluster_binding["subjects"] == [subject]
    roles = only(docs, "Role")
    bindings = only(docs, "RoleBinding")
    assert [role["metadata"]["namespace"] for role in roles] == ["speech", "lab"]
    assert [binding["metadata"]["namespace"] for binding in bindings] == ["speech", "lab"]
    for role, binding in zip(roles, bindings, strict=True):
        assert sorted(_rules(role)) == sorted(NAMESPACED_RULES)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [subject]
    for doc in [cluster_role, *roles]:
        assert not [rule for rule in doc["rules"] if "namespaces" in rule["resources"]]
    _assert_no_wildcards(docs)


def test_rbac_and_service_account_can_be_left_out(render: Callable[..., list[Doc]]) -> None:
    docs = render("default", "--set", "rbac.create=false", "--set", "serviceAccount.create=false")
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                        "RoleBinding"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"
    assert pod["automountServiceAccountToken"] is True
    named = render("default", "--set", "serviceAccount.create=false",
                   "--set", "serviceAccount.name=existing")
    assert one(named, "ClusterRoleBinding")["subjects"][0]["name"] == "existing"


# --- values.yaml documentation ---------------------------------------------------------------


def _leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves: scalars, lists and empty maps (lists are not descended)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_keys(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def _all_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _all_keys(value, f"{prefix}{key}.")


PARAM = re.compile(r"^\s*## @param (?P<key>[A-Za-z0-9_.\[\]-]+) (?P<text>\S.*)$")


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for line in text.splitlines():
        if re.match(r"\s*##\s*@param", line):
            match = PARAM.match(line)
            assert match, f"malformed @param line: {line!r}"
            assert match["key"] not in params, f"@param {match['key']} documented twice"
            params[match["key"]] = match["text"]
    return params


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    params = _params(text)
    leaves = set(_leaf_keys(values))
    assert leaves - params.keys() == set(), "values without a ## @param line"
    assert params.keys() - set(_all_keys(values)) == set(), "## @param lines of no key"
    readme = (CHART / "README.md").read_text()
    assert [key for key in params if f"`{key}`" not in readme] == [], "keys missing in README"


def test_the_parser_notices_undocumented_keys() -> None:
    text = "a:\n  ## @param a.b the b\n  b: 1\n  c: {}\n## @param d nothing\n"
    leaves = set(_leaf_keys(yaml.safe_load(text)))
    params = _params(text)
    assert leaves - params.keys() == {"a.c"}
    assert params.keys() - set(_all_keys(yaml.safe_load(text))) == {"d"}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "chorus"
    assert chart["version"] == APP_VERSION and chart["appVersion"] == APP_VERSION
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defines = re.findall(r'define "([^"]+)"', helpers)
    for name in ("chorus.name", "chorus.fullname", "chorus.chart", "chorus.labels",
                 "chorus.selectorLabels", "chorus.serviceAccountName", "chorus.operatorImage",
                 "chorus.serverImage"):
        assert name in defines
    for name in defines:  # every helper has its one-line comment just above it
        assert re.search(r"\{\{/\* " + re.escape(name) + r":[^\n]*\*/\}\}\n\{\{-? define \""
                         + re.escape(name) + '"', helpers), f"{name} has no comment"


# --- NOTES.txt ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes(helm: Helm, full_values_file: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """NOTES.txt rendered with the chart's values.

    ``helm install --dry-run=client`` still asks a cluster for its version, and
    ``helm template`` skips NOTES.txt, so a copy of the chart wraps NOTES.txt in a
    named template and renders it into a YAML string.
    """
    chart = tmp_path_factory.mktemp("notes") / "chorus"
    shutil.copytree(CHART, chart)
    body = (CHART / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_test.tpl").write_text(
        '{{- define "chorustest.notes" -}}\n' + body + "{{- end -}}\n")
    (chart / "templates" / "notes-test.yaml").write_text(
        'notes: |\n{{ include "chorustest.notes" . | indent 2 }}\n')

    def run(preset: str = "default") -> str:
        args: list[str | Path] = ["template", RELEASE, chart, "--namespace", RELEASE_NAMESPACE,
                                  "--show-only", "templates/notes-test.yaml"]
        if preset == "full":
            args += ["--values", full_values_file]
        return str(yaml.safe_load(helm(*args).stdout)["notes"])

    return run


def _applied_yaml(text: str) -> list[Doc]:
    match = re.search(r"kubectl apply[^\n]*<<'(\w+)'\n(.*?)\n\s*\1\n", text, re.S)
    assert match, "NOTES.txt has no kubectl apply heredoc"
    return [doc for doc in yaml.safe_load_all(textwrap.dedent(match[2])) if doc]


@pytest.mark.parametrize(("preset", "namespace"), [("default", RELEASE_NAMESPACE),
                                                   ("full", "speech")])
def test_notes(notes: Callable[..., str], preset: str, namespace: str) -> None:
    text = notes(preset)
    assert f"kubectl apply -n {namespace} -f -" in text
    assert f"kubectl get ttss,ttsv -n {namespace}" in text
    assert f"Host: speech.{namespace}.svc.cluster.local" in text
    assert "Port: 10200" in text
    assert "Wyoming" in text
    assert "kubectl apply --server-side -f charts/chorus/crds/" in text
    docs = _applied_yaml(text)
    assert [doc["kind"] for doc in docs] == ["TTSVoice", "TTSService"]
    for doc in docs:
        validate_custom(doc)
    voice, service = docs
    assert service["metadata"]["name"] == "speech"
    assert service["spec"]["voices"]["names"] == [voice["metadata"]["name"]]
    assert service["spec"]["defaultVoice"] == voice["spec"]["voice"]
    if preset == "full":
        assert "speech, lab" in text
        assert f"namespace {RELEASE_NAMESPACE} is not in watchNamespaces" in text
    else:
        assert "every namespace" in text
        assert "not in watchNamespaces" not in text
