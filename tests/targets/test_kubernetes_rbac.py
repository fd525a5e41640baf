"""The example RBAC Role in README.md's Kubernetes section grants exactly what the `kubernetes:`
target does, derived from the code: the kinds it applies (its manifests), deletes
(delete_order), reads and lists (each `api.read`/`api.list` call in targets/kubernetes*.py and
stop_challenger's reads of challenger_objects), and the pod subresources it calls (the paths
and the proxy admin API's HTTP methods). No cluster needed."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import kubernetes_validate
import yaml
from mlops_pipeline.targets.base import DeployConfig, ModelRef
from mlops_pipeline.targets.kubernetes import challenger_objects, delete_order
from mlops_pipeline.targets.kubernetes_api import KINDS
from mlops_pipeline.targets.kubernetes_manifests import (
    challenger_manifests,
    manifests,
    routes_manifest,
    settings_for,
)

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Kubernetes: the `kubernetes:` target"
HTTP_VERBS = {"GET": "get", "PUT": "update", "POST": "create", "DELETE": "delete"}
Grants = dict[tuple[str, str], set[str]]


def readme_role() -> dict:
    """The yaml block with `kind: Role` in the README's Kubernetes section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n### ", len(SECTION))]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    (role,) = [doc for doc in map(yaml.safe_load, blocks) if doc.get("kind") == "Role"]
    return role


def resource(kind: str) -> tuple[str, str]:
    """(API group, plural) of a kind the target uses."""
    version = KINDS[kind]
    return (version.split("/")[0] if "/" in version else "", f"{kind.lower()}s")


def called_kinds(method: str) -> set[str]:
    """Kinds given as a literal to `<x>.api.<method>(...)` (or `self.api`) in the target."""
    found = set()
    for path in sorted((ROOT / "targets").glob("kubernetes*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            on_api = isinstance(owner, ast.Attribute) and owner.attr == "api"
            if on_api and node.func.attr == method and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found


def required() -> Grants:
    """What the target does, from its code."""
    config = DeployConfig(api_key_file="keys")
    settings = settings_for(config)
    model = ModelRef("iris", "1")
    docs = [
        *manifests("n", "ns", model, config, "img", settings, api_keys="k", proxy_token="t"),
        *challenger_manifests(
            "n", "ns", model, config, "img", settings, autoscaled=True, disruption_budget=True
        ),
        routes_manifest("n", "ns", {}),
    ]
    needs: Grants = defaultdict(set)
    for doc in docs:  # server-side apply: a PATCH that may create
        needs[resource(doc["kind"])] |= {"create", "patch"}
    for kind, _ in delete_order("n"):
        needs[resource(kind)].add("delete")
    for kind in called_kinds("read") | {kind for kind, _ in challenger_objects("n")}:
        needs[resource(kind)].add("get")
    for kind in called_kinds("list"):
        needs[resource(kind)].add("list")
    source = "".join(p.read_text() for p in (ROOT / "targets").glob("kubernetes*.py"))
    if re.search(r"/pods/\{[^}]+\}/log", source):
        needs[("", "pods/log")].add("get")
    if re.search(r"/pods/\{[^}]+\}:\{[^}]+\}\s*\"?\s*f?\"?/proxy/", source):
        admin = (ROOT / "mlops/rollout/admin.py").read_text()
        for method in set(re.findall(r'_call\(\s*"([A-Z]+)"', admin)):
            needs[("", "pods/proxy")].add(HTTP_VERBS[method])
    return dict(needs)


def granted(role: dict) -> Grants:
    grants: Grants = defaultdict(set)
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for name in rule["resources"]:
                grants[(group, name)] |= set(rule["verbs"])
    return dict(grants)


def test_the_readme_role_grants_exactly_what_the_target_uses():
    role = readme_role()
    needs = required()

    kubernetes_validate.validate(role, kubernetes_validate.utils.latest_version(), strict=True)
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    # every kind the target touches, its pod subresources, and nothing else
    assert {name for _, name in needs} >= {
        "secrets", "configmaps", "services", "deployments", "horizontalpodautoscalers",
        "poddisruptionbudgets", "pods", "pods/log", "pods/proxy",
    }  # fmt: skip
    assert granted(role) == needs
