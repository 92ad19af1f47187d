"""Tests for clar_ray.dist: single-process no-ops and a real two-process gloo group."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from clar_ray import dist

WORLD = 2
SIZES = [3, 2]  # unequal rows per worker: worker 0 has 3, worker 1 has 2
D = 4


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_outside_a_process_group_everything_is_a_no_op() -> None:
    assert not dist.is_distributed()
    assert dist.rank() == 0
    assert dist.world_size() == 1
    x = torch.randn(3, D, requires_grad=True)
    assert dist.gather_with_grad(x) is x
    assert dist.all_gather(x) is x
    assert dist.all_gather_sizes(3) == [3]
    assert dist.local_offset(3) == 0
    assert dist.global_count(5) == 5
    torch.testing.assert_close(dist.all_reduce_mean(x), x.detach())
    assert dist.all_reduce_mean(torch.tensor([3])).dtype == torch.float32


def test_negative_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="-1"):
        dist.all_gather_sizes(-1)


def data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, D, generator=g) for n in SIZES]
    # Each worker weights the gathered (5, D) tensor with its own weights.
    ws = [torch.randn(sum(SIZES), D, generator=g) for _ in range(WORLD)]
    return xs, ws


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        xs, ws = data()
        x = xs[rank].clone().requires_grad_(True)
        gathered = dist.gather_with_grad(x)
        (gathered * ws[rank]).sum().backward()
        ids = torch.arange(SIZES[rank]) + 10 * rank
        result = {
            "is_distributed": dist.is_distributed(),
            "rank": dist.rank(),
            "world_size": dist.world_size(),
            "sizes": dist.all_gather_sizes(SIZES[rank]),
            "offset": dist.local_offset(SIZES[rank]),
            "count": dist.global_count(SIZES[rank]),
            "gathered": gathered.detach(),
            "grad": x.grad,
            "ids": dist.all_gather(ids),
            "mean": dist.all_reduce_mean(torch.tensor([float(rank + 1)])),
            "sum": dist.all_reduce_sum(torch.tensor([rank + 1])),
        }
        with pytest.raises(ValueError, match="sizes"):
            dist.gather_with_grad(x, sizes=[1, 1])
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_rank_world_and_sizes_inside_a_group(results: list[dict]) -> None:
    for r, res in enumerate(results):
        assert res["is_distributed"] is True
        assert res["rank"] == r
        assert res["world_size"] == WORLD
        assert res["sizes"] == SIZES
        assert res["count"] == sum(SIZES)
    assert [res["offset"] for res in results] == [0, SIZES[0]]


def test_gather_concatenates_unequal_rows_in_rank_order(results: list[dict]) -> None:
    xs, _ = data()
    for res in results:
        torch.testing.assert_close(res["gathered"], torch.cat(xs))
        torch.testing.assert_close(res["ids"], torch.tensor([0, 1, 2, 10, 11]))


def test_gather_backward_sums_gradients_over_workers_for_own_rows(results: list[dict]) -> None:
    # Worker v's loss_w = sum(w_w * gathered); d(sum_w loss_w)/d x_v = sum_w w_w[slice v].
    _, ws = data()
    total = ws[0] + ws[1]
    torch.testing.assert_close(results[0]["grad"], total[: SIZES[0]])
    torch.testing.assert_close(results[1]["grad"], total[SIZES[0] :])


def test_all_reduce_mean_and_sum(results: list[dict]) -> None:
    for res in results:
        torch.testing.assert_close(res["mean"], torch.tensor([1.5]))
        assert res["sum"].tolist() == [3]
