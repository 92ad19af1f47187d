"""clar-ray on real Ray clusters: ``cluster.yaml``, the job files, a real ``ray job submit``.

Two halves:

* ``cluster.yaml`` passes Ray's own autoscaler validation offline (no cloud account), keeps work
  off the head, runs spot workers, exposes nothing but SSH, and carries every node label that a
  job in ``jobs/`` selects.
* A real Ray head (``ray start --head`` in its own process group, on free ports, on loopback only,
  with token authentication) accepts the quickstart through ``ray job submit --working-dir``, the
  way a user submits to a cluster, and the job's logs and run directory are checked.

The head never touches other Ray sessions on the machine: no ``ray stop`` (it kills every Ray
on the machine), its own ``--temp-dir``, every port chosen free, and teardown by process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from clar_ray import storage
from clar_ray.config import load_job
from clar_ray.local_cluster import free_ports

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
JOB_FILES = sorted((REPO / "jobs").glob("*.yaml"))
PAPER_JOBS = {"clar": REPO / "jobs" / "paper-sc10-clar.yaml",
              "simclr": REPO / "jobs" / "paper-sc10-simclr.yaml",
              "supervised": REPO / "jobs" / "paper-sc10-supervised.yaml"}

#: Bound on the head's start-up until its job API and its dashboard agent answer. Measured on a
#: 2-core machine: 7.6-19 s at load average 6-17; the bound is for a machine under heavy load
#: (other test sessions), with a clear failure and the head's logs when it is passed.
HEAD_START_TIMEOUT_S = float(os.environ.get("CLAR_RAY_TEST_HEAD_TIMEOUT_S", "240"))
#: Bound on the whole quickstart job (upload, synthetic data, 1 epoch, linear probe).
JOB_TIMEOUT_S = float(os.environ.get("CLAR_RAY_TEST_JOB_TIMEOUT_S", "600"))
#: Seconds the head gets to tear its processes down after SIGTERM before they are killed.
HEAD_STOP_TIMEOUT_S = 30.0
#: Logical CPUs the test head declares (the tiny quickstart plans 2.25).
HEAD_CPUS = 4
#: What ``--working-dir`` must not upload (caches, run outputs, VCS data).
WORKING_DIR_EXCLUDES = [".git", "**/__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                        "*.egg-info", "runs", "build"]
#: The quickstart at a size whose job takes ~75 s on two busy cores (data, 1 epoch, probe).
TINY_QUICKSTART = ("train.epochs=1 model.width=4 model.hidden_dim=16 model.projection_dim=8 "
                   "eval.every_epochs=0 eval.probe_epochs=5")


# ------------------------------------------------------------------------------- cluster.yaml

def _cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _worker_types(cluster: Mapping[str, Any]) -> dict[str, Any]:
    head = cluster["head_node_type"]
    return {name: spec for name, spec in cluster["available_node_types"].items() if name != head}


def _start_flags(command: str) -> dict[str, str]:
    """``--flag=value`` and ``--flag value`` pairs of one ``ray start`` command line."""
    words = shlex.split(command)
    flags: dict[str, str] = {}
    for index, word in enumerate(words):
        if not word.startswith("--"):
            continue
        name, sep, value = word.partition("=")
        if not sep and index + 1 < len(words) and not words[index + 1].startswith("--"):
            value = words[index + 1]
        flags[name] = value
    return flags


def test_cluster_yaml_passes_ray_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_cluster())
    validate_config(config)  # raises jsonschema.ValidationError on an unknown or bad field
    assert config["head_node_type"] in config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert _worker_types(config), "cluster.yaml has no worker node types"


def test_ray_validation_rejects_a_misspelt_field() -> None:
    """The validation above is not vacuous: a typo in a node type is refused."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = _cluster()
    worker = next(iter(_worker_types(broken)))
    broken["available_node_types"][worker]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_head_runs_no_tasks() -> None:
    cluster = _cluster()
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must declare CPU: 0"
    assert not head["resources"].get("GPU"), "the head must declare no GPU"


def test_workers_are_spot_and_can_scale_to_zero() -> None:
    for name, spec in _worker_types(_cluster()).items():
        market = spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType")
        assert market == "spot", f"node type {name!r} is not spot (MarketType={market!r})"
        assert spec.get("min_workers", 0) == 0, f"node type {name!r} keeps idle nodes"


def test_only_ssh_is_exposed() -> None:
    cluster = _cluster()
    head_starts = [c for c in cluster["head_start_ray_commands"] if "ray start" in c]
    assert len(head_starts) == 1, head_starts
    flags = _start_flags(head_starts[0])
    assert flags.get("--dashboard-host") == "127.0.0.1", (
        f"the dashboard (and its job API) must listen on loopback only, got "
        f"--dashboard-host={flags.get('--dashboard-host')!r}")
    assert flags.get("--include-dashboard", "true").lower() != "false", "ray job submit needs it"
    # A security group of our own may open nothing but port 22.
    for rule in cluster["provider"].get("security_group", {}).get("IpPermissions", []):
        assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), rule
    for name, spec in cluster["available_node_types"].items():
        assert "SecurityGroupIds" not in spec["node_config"], (
            f"node type {name!r} brings its own security groups; keep the launcher's SSH-only one")


def _label_selectors(raw: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """Every non-empty ``node_labels`` mapping in a raw job tree, with its dotted key."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        prefix, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if key == "node_labels" and value:
                yield dotted, dict(value)
            else:
                stack.append((dotted, value))


def _label_matches(expression: str, value: str | None) -> bool:
    """One Ray label-selector value (``v``, ``!v``, ``in(a,b)``, ``!in(a,b)``) against a label."""
    negate = expression.startswith("!")
    body = expression[1:] if negate else expression
    found = re.fullmatch(r"in\((.*)\)", body)
    allowed = {v.strip() for v in found.group(1).split(",")} if found else {body}
    return (value not in allowed) if negate else (value in allowed)


def test_label_matcher_follows_ray_selector_syntax() -> None:
    assert _label_matches("train", "train") and not _label_matches("train", "augment")
    assert _label_matches("!train", "augment") and not _label_matches("!train", "train")
    assert _label_matches("in(train, augment)", "augment")
    assert not _label_matches("!in(train,augment)", "train")
    assert not _label_matches("train", None)


def test_every_job_label_selector_matches_a_worker_type() -> None:
    workers = _worker_types(_cluster())
    offered = {name: spec.get("labels", {}) for name, spec in workers.items()}
    seen = 0
    for path in JOB_FILES:
        for dotted, selector in _label_selectors(yaml.safe_load(path.read_text())):
            seen += 1
            matching = [name for name, labels in offered.items()
                        if all(_label_matches(str(want), labels.get(key))
                               for key, want in selector.items())]
            assert matching, (f"{path.name}: {dotted}={selector} matches no worker node type "
                              f"of cluster.yaml (labels: {offered})")
    assert seen >= 2 * len(PAPER_JOBS), "the paper jobs should select their nodes by label"


# ------------------------------------------------------------------------------ the paper jobs

@pytest.mark.parametrize("objective", sorted(PAPER_JOBS))
def test_paper_job_has_the_paper_settings_and_fits_the_cluster(objective: str) -> None:
    job = load_job(PAPER_JOBS[objective])
    assert job.objective.name == objective
    assert (job.train.batch_size, job.train.epochs, job.train.workers) == (1024, 1000, 4)
    assert (job.optim.name, job.optim.lr, job.optim.reference_batch) == ("lars", 1.0, 1024)
    assert (job.optim.warmup_epochs, job.optim.weight_decay) == (10, 1e-4)
    assert (job.model.frontend, job.model.encoder, job.model.width) == ("tf3", "resnet18_2d", 64)
    assert tuple(job.augment.sequence) == ("fade", "time_mask")
    assert job.eval.every_epochs == 10
    assert job.train.use_gpu and job.train.max_failures == -1
    assert job.train.node_labels == {"clar-ray-role": "train"}
    assert job.augment.node_labels == {"clar-ray-role": "augment"}
    assert storage.is_uri(job.data.path), f"data.path must be on a bucket, got {job.data.path!r}"
    # One GPU node per train worker: the labelled node type must scale to train.workers nodes.
    workers = _worker_types(_cluster())
    assert job.train.workers <= sum(s["max_workers"] for s in workers.values()
                                    if s.get("labels", {}).get("clar-ray-role") == "train")


def test_paper_jobs_differ_only_in_the_objective() -> None:
    """A controlled comparison: CLAR, SimCLR and supervised share every other setting."""
    plain = {name: load_job(path).to_dict() for name, path in PAPER_JOBS.items()}
    for tree in plain.values():
        tree.pop("name")
        tree["objective"].pop("name")
    assert plain["clar"] == plain["simclr"] == plain["supervised"]


# ------------------------------------------------------------------- a real head, a real job

def _http_status(url: str, headers: Mapping[str, str]) -> int | None:
    """The HTTP status of a GET (None when nothing answers yet)."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, urllib.error.URLError):
        return None


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return f"({path.name}: absent)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {path.name}:\n" + "\n".join(text)


@dataclasses.dataclass
class LocalHead:
    """A Ray head started by ``ray start --head --block`` in its own process group.

    Attributes:
        process: The ``ray start`` process (its pid is the process group id).
        dashboard: The job API's address, ``http://127.0.0.1:PORT``.
        agent: The head's dashboard agent (which runs the job drivers), ``http://127.0.0.1:PORT``.
        gcs_port: The head's GCS port.
        env: Environment for Ray CLI commands against this head (token authentication).
        temp_dir: The head's private ``--temp-dir``.
        log: The ``ray start`` output.
    """

    process: subprocess.Popen[bytes]
    dashboard: str
    agent: str
    gcs_port: int
    env: dict[str, str]
    temp_dir: Path
    log: Path

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def logs(self) -> str:
        session_logs = self.temp_dir / "session_latest" / "logs"
        return "\n".join([_tail(self.log), _tail(session_logs / "dashboard.log"),
                          _tail(session_logs / "dashboard_agent.log"),
                          _tail(session_logs / "gcs_server.out")])

    def wait_ready(self, timeout_s: float) -> float:
        """Wait until the job API and the dashboard agent answer; return the seconds taken."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with code {self.process.returncode} "
                                   f"before its job API answered\n{self.logs()}")
            api = _http_status(f"{self.dashboard}/api/version", self.auth_header)
            agent = _http_status(f"{self.agent}/api/healthz", {})
            if api == 200 and agent == 200:
                return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(
            f"the Ray head's job API ({self.dashboard}) or its dashboard agent ({self.agent}) "
            f"did not answer within {timeout_s:g} s (CLAR_RAY_TEST_HEAD_TIMEOUT_S raises the "
            f"bound)\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM ``ray start`` (it stops its children), then kill whatever is left."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(HEAD_STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_local_head(num_cpus: int, log: Path) -> LocalHead:
    """Start a Ray head on loopback, on free ports, with token authentication, in its own group.

    The environment makes it robust on a small, busy machine shared with other Ray sessions:
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps the node on 127.0.0.1 (``ray start`` otherwise
    swaps ``--node-ip-address=127.0.0.1`` for the machine's address), every port is free instead
    of Ray's fixed defaults (client server 10001 and dashboard agent 52365 collide with other
    heads, and an agent without its port cannot run jobs), ``RAY_DASHBOARD_STARTUP_TIMEOUT_S``
    lets ``ray start`` wait for a slow dashboard instead of failing at 60 s, and
    ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0`` skips the 30 s drain on SIGTERM.
    """
    flags = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "ray-client-server-port", "runtime-env-agent-port", "metrics-export-port",
             "node-manager-port", "object-manager-port")
    ports = dict(zip(flags, free_ports(len(flags))))
    temp_dir = Path(tempfile.mkdtemp(prefix="clar-ray-"))  # short: Ray's unix sockets live here
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_DASHBOARD_STARTUP_TIMEOUT_S=str(int(HEAD_START_TIMEOUT_S)),
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1",
               PYTHONUNBUFFERED="1")
    command = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               f"--num-cpus={num_cpus}", "--num-gpus=0", "--object-store-memory=500000000",
               f"--temp-dir={temp_dir}", "--disable-usage-stats",
               *(f"--{flag}={port}" for flag, port in ports.items())]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LocalHead(process=process, dashboard=f"http://127.0.0.1:{ports['dashboard-port']}",
                     agent=f"http://127.0.0.1:{ports['dashboard-agent-listen-port']}",
                     gcs_port=ports["port"], env=env, temp_dir=temp_dir, log=log)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHead]:
    if shutil.which("ray") is None:
        pytest.skip("the `ray` command is not on PATH")
    head = start_local_head(HEAD_CPUS, tmp_path_factory.mktemp("head") / "ray-start.log")
    try:
        seconds = head.wait_ready(HEAD_START_TIMEOUT_S)
        print(f"Ray head ready in {seconds:.1f} s at {head.dashboard}", file=sys.stderr)
        yield head
    finally:
        head.stop()


def _ray_job(head: LocalHead, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ray", "job", *args], env=head.env, cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s,
                          check=False)


def test_head_job_api_refuses_requests_without_the_token(ray_head: LocalHead) -> None:
    assert _http_status(f"{ray_head.dashboard}/api/jobs/", {}) == 401
    assert _http_status(f"{ray_head.dashboard}/api/jobs/",
                        {"Authorization": "Bearer not-the-token"}) == 403
    assert _http_status(f"{ray_head.dashboard}/api/jobs/", ray_head.auth_header) == 200


def test_quickstart_runs_as_a_submitted_job(ray_head: LocalHead,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("job") / "quickstart"
    submission_id = f"clar-ray-test-{secrets.token_hex(4)}"
    submit = [
        "submit", "--address", ray_head.dashboard, "--submission-id", submission_id,
        "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"excludes": WORKING_DIR_EXCLUDES}),
        "--", "clar-ray", "quickstart", "--out", str(out), "--set", TINY_QUICKSTART,
    ]
    started = time.monotonic()
    try:
        done = _ray_job(ray_head, *submit, timeout_s=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _ray_job(ray_head, "stop", "--address", ray_head.dashboard, submission_id, timeout_s=60)
        pytest.fail(f"the quickstart job did not finish within {JOB_TIMEOUT_S:g} s")
    seconds = time.monotonic() - started
    print(f"quickstart job finished in {seconds:.0f} s", file=sys.stderr)
    assert done.returncode == 0 and f"Job '{submission_id}' succeeded" in done.stdout, (
        f"ray job submit exited {done.returncode}\n{done.stdout[-6000:]}\n{ray_head.logs()}")

    logs = _ray_job(ray_head, "logs", "--address", ray_head.dashboard, submission_id,
                    timeout_s=60).stdout
    # The driver joined this head instead of starting a Ray of its own.
    assert f"Ray: connected to the cluster at 127.0.0.1:{ray_head.gcs_port}" in logs
    run_dir = out / "run"
    assert f"run directory: {run_dir}" in logs, logs[-4000:]
    result_line = re.search(r"result: .*result\.json — linear top-1 ([0-9.]+), "
                            r"kNN top-1 ([0-9.]+)", logs)
    assert result_line, logs[-4000:]
    for name in ("metrics.jsonl", "encoder.pt", "result.json"):
        assert (run_dir / name).is_file(), f"{name} missing from {sorted(os.listdir(run_dir))}"
    result = json.loads((run_dir / "result.json").read_text())
    assert 0.0 <= result["linear_top1"] <= 1.0 and 0.0 <= result["knn_top1"] <= 1.0
    assert f"{result['linear_top1']:.3f}" == result_line.group(1)
