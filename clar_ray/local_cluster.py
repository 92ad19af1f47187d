"""A multi-node Ray cluster on one machine: real ``ray start`` raylets with cluster.yaml's roles.

A head (``CPU: 0``, like cluster.yaml's) and worker nodes, each a separate ``ray start --block``
in its own process group with its own resources, ``--temp-dir`` and free ports, labelled
``clar-ray-role: train`` or ``augment`` the way cluster.yaml labels its node types. Killing a
node kills its whole process group with SIGKILL (raylet, object store, workers): what a
reclaimed spot VM does. Used by the fault tests and ``benchmarks/fault_table.py``.

It never runs ``ray stop`` (that stops every Ray on the machine): teardown kills the process
groups it started, and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

#: The node label cluster.yaml puts on its node types, and the values it uses.
ROLE_LABEL = "clar-ray-role"
#: Seconds a node gets to join (raylet up, registered with the head's GCS).
AUTH_MODE = "RAY_AUTH_MODE"
NODE_START_TIMEOUT_S = float(os.environ.get("CLAR_RAY_TEST_NODE_TIMEOUT_S", "180"))


def free_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` distinct TCP ports, free now and not in ``taken`` (which they join).

    The sockets stay bound until all are picked, so one call never gets a port twice; the OS
    hands a port out again once its socket is closed, so ``taken`` keeps a cluster's later
    picks apart from the ports its nodes were given before (they may not have bound them yet).
    """
    taken = set() if taken is None else taken
    ports: list[int] = []
    with contextlib.ExitStack() as bound:
        while len(ports) < count:
            sock = bound.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                taken.add(port)
                ports.append(port)
    return ports


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@dataclasses.dataclass
class Node:
    """One ``ray start`` of the cluster.

    Attributes:
        name: A name of the test's choosing (``head``, ``train-1``, ``augment-2``, ...).
        role: Its ``clar-ray-role`` label.
        process: The ``ray start --block`` process; its pid is the process group id.
        temp_dir: Its private ``--temp-dir``.
    """

    name: str
    role: str
    process: subprocess.Popen[bytes]
    temp_dir: str

    @property
    def alive(self) -> bool:
        """Whether its ``ray start`` process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's whole process group (a reclaimed VM: no drain, no notice)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)


class LocalCluster:
    """A head and labelled worker nodes on this machine; see the module docstring."""

    def __init__(self, *, object_store_bytes: int = 100_000_000) -> None:
        from ray._private.services import get_node_ip_address

        # The machine's address, as Ray picks it: a driver's ``ray.init`` turns 127.0.0.1
        # into it anyway (``resolve_ip_for_localhost``), so a loopback-only cluster is
        # unreachable from a test process that imported Ray before it could say otherwise.
        self.ip = get_node_ip_address()
        self._ports: set[int] = set()  # every port given to a node of this cluster
        self.gcs_port = free_ports(1, self._ports)[0]
        self.address = f"{self.ip}:{self.gcs_port}"
        self.object_store_bytes = object_store_bytes
        self.nodes: list[Node] = []
        self._outer_auth_mode: tuple[str | None] | None = None  # set while connected
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        self.env.update(RAY_USAGE_STATS_ENABLED="0",
                        RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_AUTH_MODE="disabled",
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", PYTHONUNBUFFERED="1")

    def _start(self, name: str, role: str, args: list[str]) -> Node:
        temp_dir = tempfile.mkdtemp(prefix="crn-")  # short: Ray's unix sockets live here
        flags = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "runtime-env-agent-port", "metrics-export-port", "node-manager-port",
                 "object-manager-port")
        ports = dict(zip(flags, free_ports(len(flags), self._ports)))
        command = ["ray", "start", "--block", f"--node-ip-address={self.ip}",
                   f"--temp-dir={temp_dir}", f"--labels={ROLE_LABEL}={role}",
                   f"--object-store-memory={self.object_store_bytes}", "--num-gpus=0",
                   "--disable-usage-stats",
                   *(f"--{flag}={port}" for flag, port in ports.items()), *args]
        log = open(os.path.join(temp_dir, "ray-start.log"), "wb")  # noqa: SIM115
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        node = Node(name=name, role=role, process=process, temp_dir=temp_dir)
        self.nodes.append(node)
        return node

    def start_head(self) -> Node:
        """Start the head (no CPUs: nothing heavy runs there) and connect this process to it.

        The head runs the dashboard on loopback, because Ray's state API (which tests use to
        see where actors went) is served by it.
        """
        dashboard, client = free_ports(2, self._ports)
        node = self._start("head", "head", [
            "--head", f"--port={self.gcs_port}", "--num-cpus=0", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}"])
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not _accepts(self.ip, self.gcs_port):
            if not node.alive or time.monotonic() > deadline:
                raise RuntimeError(f"the head did not start:\n{self.log(node)}")
            time.sleep(0.5)
        self.connect()
        return node

    def connect(self) -> None:
        """``ray.init`` this process as a driver of the cluster (auth as the nodes have it).

        The process keeps the cluster's ``RAY_AUTH_MODE`` until :meth:`stop`: Ray caches the
        mode in its C++ config at ``ray.init``, and a local Ray started later in this process
        must see the mode it had before (see :meth:`stop`).
        """
        import ray

        self._outer_auth_mode = (os.environ.get(AUTH_MODE),)
        os.environ[AUTH_MODE] = self.env[AUTH_MODE]
        ray.init(address=self.address, log_to_driver=False)

    def add_node(self, name: str, role: str, *, cpus: float,
                 resources: dict[str, float] | None = None, wait: bool = True) -> Node:
        """Join a worker node labelled ``role`` with ``cpus`` CPUs and custom ``resources``."""
        alive = self._count_alive()
        for attempt in range(3):  # a free port taken by another process between the pick
            node = self._start(name, role, [  # and the raylet's bind: try new ports
                f"--address={self.address}", f"--num-cpus={cpus:g}",
                f"--resources={json.dumps(resources or {})}"])
            if not wait:
                return node
            try:
                self._wait_for_nodes(alive + 1, node)
                return node
            except RuntimeError:
                self.nodes.remove(node)
                node.kill()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def alive_nodes(self) -> list[Node]:
        """The nodes whose ``ray start`` still runs."""
        return [node for node in self.nodes if node.alive]

    def _wait_for_nodes(self, count: int, node: Node) -> None:
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(f"ray start of node {node.name} exited with "
                                   f"{node.process.returncode}:\n{self.log(node)}")
            if self._count_alive() >= count:
                return
            time.sleep(1.0)
        raise TimeoutError(f"node {node.name} did not join within {NODE_START_TIMEOUT_S:g} s "
                           f"(CLAR_RAY_TEST_NODE_TIMEOUT_S raises it):\n{self.log(node)}")

    def node_id(self, node: Node) -> str:
        """The Ray node id of one of this cluster's nodes (by its object store socket's dir)."""
        import ray

        for info in ray.nodes():
            socket_path = info.get("ObjectStoreSocketName", "")
            if info.get("Alive") and socket_path.startswith(node.temp_dir):
                return str(info["NodeID"])
        raise LookupError(f"node {node.name} is not alive in the cluster")

    def node_of_actor(self, class_name_part: str) -> Node | None:
        """The node of an alive actor whose class name contains the part (state API)."""
        ids = {self.node_id(node): node for node in self.alive_nodes()}
        for actor in actors(self.address, class_name_part):
            if actor.state == "ALIVE" and actor.node_id in ids:
                return ids[actor.node_id]
        return None

    def _count_alive(self) -> int:
        """Alive nodes as the head's GCS sees them."""
        import ray

        return sum(1 for node in ray.nodes() if node.get("Alive"))

    def log(self, node: Node, lines: int = 30) -> str:
        """The last lines of a node's ``ray start`` output."""
        path = os.path.join(node.temp_dir, "ray-start.log")
        if not os.path.exists(path):
            return "(no log)"
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])

    def stop(self) -> None:
        """Disconnect, then kill every node this cluster started (workers first, head last)."""
        import ray

        ray.shutdown()
        self._restore_auth_mode()
        for node in reversed(self.nodes):
            node.kill()
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)

    def _restore_auth_mode(self) -> None:
        """Give the process back the auth mode it had, in the environment and Ray's config.

        Without the refresh, a later ``ray.init(address="local")`` with ``RAY_AUTH_MODE=token``
        in the environment would start a token-checking GCS while this process's cached config
        still says "disabled", and fail with "Authentication token is missing".
        """
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled, no stubs

        if self._outer_auth_mode is None:
            return
        (outer,) = self._outer_auth_mode
        if outer is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = outer
        Config.initialize("")
        self._outer_auth_mode = None


def node_roles() -> dict[str, str]:
    """``{node id: clar-ray-role}`` of every node the connected driver's cluster knows."""
    import ray

    return {node["NodeID"]: node.get("Labels", {}).get(ROLE_LABEL, "")
            for node in ray.nodes()}


def actors(address: str, class_name_part: str) -> list[Any]:
    """Ray's state records of every actor whose class name contains the part, dead included."""
    from ray.util.state import list_actors

    return [actor for actor in list_actors(address=address, limit=10_000, detail=True,
                                           raise_on_missing_output=False)
            if class_name_part in actor.class_name]


def actor_roles(address: str, class_name_part: str) -> list[tuple[str, str]]:
    """``(state, role of its node)`` of every actor whose class name contains the part.

    From Ray's state API (``ray.util.state.list_actors``), dead actors included.
    """
    roles = node_roles()
    return [(actor.state, roles.get(actor.node_id or "", "?"))
            for actor in actors(address, class_name_part)]
