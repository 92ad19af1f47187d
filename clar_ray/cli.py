"""The ``clar-ray`` command: prepare, train, evaluate, embed, tune, analyze, quickstart.

Every subcommand is a thin layer over a library function, so what the command line does a
notebook or a Ray job can do too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clar_ray.config import ConfigError, load_job


def _add_job_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job YAML file (see jobs/)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="override a config leaf, e.g. --set train.epochs=3 model.width=16 "
                             "(repeatable; one --set may hold several pairs)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a new local Ray)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clar-ray",
        description="Contrastive learning of audio representations (CLAR, ACL, SLICER) on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare", help="decode audio into Parquet shards + manifest.json",
        description="Decode, mix to mono, resample and pad/crop audio into Parquet shards.")
    prepare.add_argument("recipe", help="folder, fsdd, philharmonia, speechcommands, esc50, "
                                        "nsynth or synthetic")
    prepare.add_argument("--out", required=True, help="output directory (local or URI)")
    prepare.add_argument("--source", default=None, help="the dataset's folder (local or URI)")
    prepare.add_argument("--sample-rate", type=int, default=16000, help="target rate in Hz")
    prepare.add_argument("--clip-seconds", type=float, default=1.0,
                         help="clip length in seconds (paper: 1 speech, 4 NSynth, 5 ESC)")
    prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a recipe option, e.g. --option label=pitch_class (repeatable)")
    prepare.add_argument("--strict", action="store_true", help="fail on any skipped file")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing output")
    prepare.add_argument("--rows-per-shard", type=int, default=256,
                         help="rows per Parquet file (more files stream to more actors)")
    prepare.add_argument("--address", default=None, help="Ray cluster address")

    train = commands.add_parser("train", help="train an encoder with Ray Train",
                                description="Train, then evaluate the encoder (result.json).")
    _add_job_args(train)
    train.add_argument("--out", required=True, help="run directory (local or URI)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--overwrite", action="store_true", help="start --out again")
    train.add_argument("--no-eval", action="store_true", help="skip the final linear probe")

    evaluate = commands.add_parser("evaluate", help="linear probe + kNN on a trained encoder")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", default=None, help="prepared dataset (default: the job's)")

    embed = commands.add_parser("embed", help="write one embedding per clip to Parquet")
    embed.add_argument("run_dir")
    embed.add_argument("--data", required=True, help="prepared dataset directory")
    embed.add_argument("--out", required=True, help="output Parquet file or directory")
    embed.add_argument("--split", default=None, help="one split (default: all)")
    embed.add_argument("--address", default=None, help="Ray cluster address")

    tune = commands.add_parser("tune", help="run a grid of trainings with Ray Tune")
    tune.add_argument("job", help="tune job YAML (a base job plus a grid or a named study)")
    tune.add_argument("--out", required=True, help="experiment directory (local or URI)")
    tune.add_argument("--resume", action="store_true", help="finish an interrupted experiment")
    tune.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                      metavar="KEY=VALUE", help="override a leaf of the base job")
    tune.add_argument("--address", default=None, help="Ray cluster address")

    analyze = commands.add_parser("analyze", help="figures and tables from a tune experiment")
    analyze.add_argument("experiment_dir")
    analyze.add_argument("--out", default=None, help="report directory (default: inside it)")

    quick = commands.add_parser(
        "quickstart", help="prepare the synthetic data, train the quickstart job, evaluate",
        description="End to end on built-in synthetic data, on a local Ray cluster (CPU).")
    quick.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    quick.add_argument("--out", default="runs/quickstart", help="where data and run go")
    quick.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                       metavar="KEY=VALUE", help="override a config leaf")
    return parser


def _options(pairs: Sequence[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


def _cmd_prepare(args: argparse.Namespace) -> int:
    from clar_ray.data.prepare import format_summary, prepare_dataset

    _connect(args.address)
    manifest = prepare_dataset(
        args.recipe, args.out, source=args.source, sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds, options=_options(args.option), strict=args.strict,
        overwrite=args.overwrite, rows_per_shard=args.rows_per_shard)
    print(format_summary(manifest))
    return 0


def _connect(address: str | None) -> None:
    import os

    import ray

    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or os.environ["RAY_ADDRESS"])


def _cmd_train(args: argparse.Namespace) -> int:
    from clar_ray.train import run_training

    job = load_job(args.job, args.overrides)
    summary = run_training(job, args.out, resume=args.resume, overwrite=args.overwrite,
                           evaluate=not args.no_eval, address=args.address)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    run_dir = summary["run_dir"]
    print(f"\nrun directory: {run_dir}  ({summary['epochs']} epochs; {summary['plan']})")
    print(f"  metrics:     {run_dir}/metrics.jsonl")
    print(f"  tensorboard: tensorboard --logdir {run_dir}/tensorboard")
    print(f"  encoder:     {run_dir}/encoder.pt")
    if "result" in summary:
        result = summary["result"]
        print(f"  result:      {run_dir}/result.json — linear top-1 "
              f"{result['linear_top1']:.3f}, kNN top-1 {result['knn_top1']:.3f}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from clar_ray.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run_dir, args.data), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from clar_ray.evaluate import embed_run

    _connect(args.address)
    rows = embed_run(args.run_dir, args.data, args.out, split=args.split)
    print(f"wrote {rows} embeddings to {args.out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from clar_ray.tune import run_study

    experiment = run_study(args.job, args.out, resume=args.resume, overrides=args.overrides,
                           address=args.address)
    print(f"experiment: {experiment}\nnext: clar-ray analyze {experiment}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from clar_ray.analyze import analyze_experiment

    report = analyze_experiment(args.experiment_dir, args.out)
    print(f"report: {report}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from clar_ray import storage
    from clar_ray.data.prepare import format_summary, prepare_dataset
    from clar_ray.train import ensure_ray, run_training

    out = Path(args.out).resolve()
    data_dir = str(out / "data")
    job = load_job(args.job, [f"data.path={data_dir}", *args.overrides])
    ensure_ray(job)
    if storage.exists(str(out / "data" / "manifest.json")):
        print(f"using the prepared synthetic data in {data_dir}")
    else:
        print(format_summary(prepare_dataset("synthetic", data_dir)))
    summary = run_training(job, str(out / "run"), overwrite=True)
    _print_summary(summary)
    return 0


COMMANDS = {
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "embed": _cmd_embed,
    "tune": _cmd_tune,
    "analyze": _cmd_analyze,
    "quickstart": _cmd_quickstart,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``clar-ray`` command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"clar-ray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # ResourcePlanError, TrainingStoppedError, PrepareError
        if type(err).__module__.startswith("clar_ray"):
            print(f"clar-ray {args.command}: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
