"""The one-machine multi-node cluster leaves its process able to start a local Ray again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A fresh process: Ray caches the auth mode and token per process, so the scenario must not
# leave them behind in the test session.
SCENARIO = """
import ray
from clar_ray.local_cluster import LocalCluster

ray.init(address="local", num_cpus=1, include_dashboard=False)  # Ray 2.60: token auth on
ray.shutdown()
cluster = LocalCluster()  # its nodes run without token auth
try:
    cluster.start_head()
finally:
    cluster.stop()
ray.init(address="local", num_cpus=1, include_dashboard=False)
assert ray.get(ray.put(7)) == 7
ray.shutdown()
print("local Ray after the cluster: ok")
"""


def test_a_local_ray_starts_after_the_cluster_stops(tmp_path: Path) -> None:
    """After the cluster, a local ``ray.init`` runs in the auth mode the process had before.

    With the cluster's "disabled" left in Ray's cached config, the new GCS (token mode, from
    the environment) refuses the process's own calls: "Authentication token is missing".
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)  # Ray writes its generated token under ~/.ray
    done = subprocess.run([sys.executable, "-c", SCENARIO], env=env, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "local Ray after the cluster: ok" in done.stdout
