"""cluster.yaml's IAM, offline: the head may do what Ray's AWS autoscaler does, and hand the
workers their profile; every node may use the bucket; README's cluster steps run as written.

Ray skips its default head role (EC2 + S3 + ...) as soon as the head names an instance profile,
so the head's own policy must allow every EC2 call the autoscaler makes. Those calls are read
from Ray's installed AWS node provider, so a Ray upgrade that needs a new action fails here.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IAM = REPO / "iam"
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
README = (REPO / "README.md").read_text()


def _policy(name: str) -> list[dict]:
    return json.loads((IAM / f"{name}-policy.json").read_text())["Statement"]


def _allows(statements: list[dict], action: str, resource: str = "*") -> bool:
    for statement in statements:
        actions = statement["Action"]
        resources = statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if statement["Effect"] == "Allow" and any(
                fnmatch.fnmatchcase(action, a) for a in actions) and any(
                fnmatch.fnmatchcase(resource, r) for r in resources):
            return True
    return False


def _autoscaler_ec2_actions() -> set[str]:
    """The EC2 API actions Ray's AWS node provider calls (boto3 snake_case → IAM action)."""
    from ray.autoscaler._private.aws import node_provider

    source = Path(node_provider.__file__).read_text()
    calls = set(re.findall(r"\bclient\.([a-z_]+)\(", source))
    calls |= set(re.findall(r"\b(?:ec2|ec2_fail_fast)\.([a-z_]+)\(", source))
    names = {"create_instances": "run_instances", "terminate": "terminate_instances",
             "stop": "stop_instances", "filter": "describe_instances"}
    if re.search(r"\bnode\.terminate\(\)", source):
        calls.add("terminate")
    if re.search(r"\bnode\.stop\(\)", source):
        calls.add("stop")
    if "instances.filter(" in source:
        calls.add("filter")
    return {"ec2:" + "".join(w.title() for w in names.get(c, c).split("_")) for c in calls}


def _profiles() -> dict[str, str]:
    return {name: node["node_config"]["IamInstanceProfile"]["Name"]
            for name, node in CLUSTER["available_node_types"].items()}


def test_the_head_may_make_every_ec2_call_of_rays_autoscaler() -> None:
    actions = _autoscaler_ec2_actions()
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags",
            "ec2:DescribeInstances"} <= actions  # the parse found the provider's calls
    head = _policy("head")
    assert [a for a in sorted(actions) if not _allows(head, a)] == []
    assert not [a for a in sorted(actions) if _allows(_policy("worker"), a)]


def test_rays_bootstrap_keeps_the_heads_profile_so_its_policy_is_the_one_that_counts() -> None:
    from ray.autoscaler._private.aws import config as aws_config

    config = copy.deepcopy(CLUSTER)
    config["head_node"] = {}
    out = aws_config._configure_iam_role(config)  # returns before any AWS call
    head = out["available_node_types"][out["head_node_type"]]["node_config"]
    assert head["IamInstanceProfile"] == {"Name": "clar-ray-head"}
    assert out["head_node"] == {}


def test_the_head_can_pass_the_workers_role_and_every_node_can_use_the_bucket() -> None:
    profiles = _profiles()
    head = _policy("head")
    workers = {p for name, p in profiles.items() if name != CLUSTER["head_node_type"]}
    assert workers == {"clar-ray-worker"}
    for profile in workers:  # iam/create.sh names each role like its profile
        assert _allows(head, "iam:PassRole", f"arn:aws:iam::123456789012:role/{profile}")
    assert not _allows(head, "iam:PassRole", "arn:aws:iam::123456789012:role/admin")
    for name in ("head", "worker"):
        statements = _policy(name)
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert _allows(statements, action, "arn:aws:s3:::YOUR-BUCKET/clar-ray/x"), action
        assert _allows(statements, "s3:ListBucket", "arn:aws:s3:::YOUR-BUCKET")
        assert not _allows(statements, "s3:GetObject", "arn:aws:s3:::another-bucket/x")
    script = (IAM / "create.sh").read_text()
    assert "for name in head worker" in script and 'role="clar-ray-$name"' in script
    assert "--instance-profile-name \"$role\"" in script  # each profile named like its role


def test_cluster_yaml_names_only_files_that_exist() -> None:
    text = (REPO / "cluster.yaml").read_text()
    for pattern in re.findall(r"\b((?:jobs|iam)/[\w*.-]+)", text):
        assert list(REPO.glob(pattern)), f"cluster.yaml mentions {pattern}, which does not exist"


def _readme_cluster_commands() -> list[str]:
    section = README.split("## Running on a cluster", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_cluster_steps_submit_what_needs_the_cluster() -> None:
    commands = _readme_cluster_commands()
    assert any(c.startswith("iam/create.sh ") for c in commands)
    job_api = False  # RAY_ADDRESS points at the job API, where only `ray job ...` works
    for command in commands:
        words = command.replace("&&", " && ").split()
        job_api = job_api or "RAY_ADDRESS=http://localhost:8265" in command
        for i, word in enumerate(words):
            if word != "clar-ray" or (i and words[i - 1] == "--"):
                continue  # not a command, or one submitted as a job
            if job_api:  # analyze reads files and starts no Ray
                assert words[i + 1] == "analyze", command
        if "clar-ray" in words and "--" in words:
            assert words[:3] == ["ray", "job", "submit"], command


@pytest.mark.parametrize("extra", ["tensorboard"])
def test_extras_named_in_the_readme_exist(extra: str) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf"^{extra} = \[", pyproject, re.M)
    assert f"clar-ray[{extra}]" in README or f".[{extra}]" in README
