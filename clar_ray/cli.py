"""The ``clar-ray`` command: prepare, train, evaluate, embed, export, tune, analyze, quickstart.

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

#: The job ``clar-ray quickstart`` runs when none is given (packaged with clar_ray).
QUICKSTART_JOB = "jobs/quickstart.yaml"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, except empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or isinstance(
                action, argparse._VersionAction):
            return action.help or ""
        return super()._get_help_string(action) or ""


def _add_job_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?",
                        help="job YAML file (see jobs/); with --resume it may be left out: "
                             "the run's config.yaml")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="override a config leaf, e.g. --set train.epochs=3 model.width=16 "
                             "(repeatable; one --set may hold several pairs)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a new local Ray)")


# long: one declaration per option and command, a table rather than a story.
def _parser() -> argparse.ArgumentParser:
    from clar_ray import __version__

    parser = argparse.ArgumentParser(
        prog="clar-ray", formatter_class=_Formatter,
        description="Contrastive learning of audio representations (CLAR, ACL, SLICER) on Ray.")
    parser.add_argument("--version", action="version", version=f"clar-ray {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show Ray's logs and warnings, and full tracebacks of errors "
                             "(may also follow the command)")
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
    prepare.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress bars (default: when standard error is a terminal)")

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
    embed.add_argument("--overwrite", action="store_true",
                       help="replace embeddings clar-ray wrote at --out (never other files)")
    embed.add_argument("--address", default=None, help="Ray cluster address")

    export = commands.add_parser(
        "export", help="write the encoder as one TorchScript file: audio (B, T) -> (B, D)",
        description="Write the trained encoder, frontend inside, as a TorchScript file that "
                    "torch alone loads (torch.jit.load); it also serves the HEAR API "
                    "(clar_ray.hear.load_model).")
    export.add_argument("run_dir", help="run directory with config.yaml and encoder.pt")
    export.add_argument("--out", required=True, help="the file to write (local or URI)")

    tune = commands.add_parser("tune", help="run a grid of trainings with Ray Tune")
    tune.add_argument("job", nargs="?",
                      help="tune job YAML (a base job plus a grid or a named study)")
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
    quick.add_argument("job", nargs="?", default=None,
                       help=f"job YAML (default: the packaged {QUICKSTART_JOB})")
    quick.add_argument("--out", default="runs/quickstart", help="where data and run go")
    quick.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                       metavar="KEY=VALUE", help="override a config leaf")
    for sub in commands.choices.values():
        sub.formatter_class = _Formatter
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
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    manifest = prepare_dataset(
        args.recipe, args.out, source=args.source, sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds, options=_options(args.option), strict=args.strict,
        overwrite=args.overwrite, rows_per_shard=args.rows_per_shard, progress=progress)
    print(format_summary(manifest))
    return 0


def _connect(address: str | None) -> None:
    """Connect to ``address`` or RAY_ADDRESS when given (else the command starts a local Ray)."""
    import os

    from clar_ray.resources import init_ray

    if address or os.environ.get("RAY_ADDRESS"):
        init_ray(address)


def _load_job(path: str | None, overrides: Sequence[str]) -> Any:
    """:func:`load_job` whose every failure is one line (a ConfigError)."""
    import yaml

    if path is None:
        raise ConfigError("the job YAML file is missing: clar-ray COMMAND JOB.yaml [--set ...]")
    _check_overrides(overrides)
    if not Path(path).is_file():
        raise ConfigError(f"job file {path} not found (jobs live in jobs/*.yaml)")
    try:
        return load_job(path, overrides)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_where(err)})") from None


def _check_overrides(overrides: Sequence[str]) -> None:
    """Refuse a ``--set`` whose value is not YAML, in one line that shows how to quote it."""
    import yaml

    from clar_ray.config import parse_overrides

    for text in overrides:
        try:
            parse_overrides([text])
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {text!r}: the value is not valid YAML ({_yaml_where(err)}); "
                              f"quote brackets and spaces, e.g. --set 'augment.sequence=[fade, "
                              f"time_mask]'") from None


def _run_job(run_dir: str, overrides: Sequence[str]) -> Any:
    """The job of the run in ``run_dir`` (its ``config.yaml``) with ``overrides`` applied.

    ``clar-ray train --out RUN_DIR --resume`` continues a run without its job file;
    :func:`clar_ray.rundir.check_resume` still decides which overrides may change.
    """
    import yaml

    from clar_ray import artifacts, storage
    from clar_ray.config import JobConfig
    from clar_ray.overrides import apply_overrides

    _check_overrides(overrides)
    path = artifacts.run_file(storage.absolute(run_dir), artifacts.CONFIG_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"--resume: no run to continue in {run_dir} (no "
                                f"{artifacts.CONFIG_FILE}); to start one, name its job: "
                                f"clar-ray train JOB.yaml --out {run_dir}")
    try:
        raw = yaml.safe_load(storage.read_text(path)) or {}
        return JobConfig.from_dict(apply_overrides(raw, overrides))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_where(err)})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _yaml_where(err: Exception) -> str:
    """``line 3, column 7: mapping values are not allowed here`` from a YAML error."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _cmd_train(args: argparse.Namespace) -> int:
    from clar_ray.train import run_training

    if args.job is None and args.resume:
        job = _run_job(args.out, args.overrides)
    else:
        job = _load_job(args.job, args.overrides)
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

    print(f"evaluating the encoder of {args.run_dir} (linear probe + kNN on the frozen "
          f"features)...", flush=True)
    print(json.dumps(evaluate_run(args.run_dir, args.data), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from clar_ray.embed import check_output, embed_run

    check_output(args.out, overwrite=args.overwrite)  # before Ray starts
    _connect(args.address)
    print(f"embedding {args.data} with the encoder of {args.run_dir}...", flush=True)
    rows = embed_run(args.run_dir, args.data, args.out, split=args.split,
                     overwrite=args.overwrite)
    print(f"wrote {rows} embeddings to {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from clar_ray.export import export_run
    from clar_ray.hear import HEAR_SAMPLE_RATES

    meta = export_run(args.run_dir, args.out)
    print(f"wrote {args.out}: audio (B, T) at {meta['sample_rate']} Hz -> "
          f"({meta['embedding_size']},) embeddings; {meta['frontend']} frontend, frames every "
          f"{1000 * meta['hop_samples'] / meta['sample_rate']:g} ms; config sha256 "
          f"{meta['config_sha256'][:12]}")
    if meta["sample_rate"] not in HEAR_SAMPLE_RATES:
        print(f"note: HEAR tasks come at {', '.join(map(str, HEAR_SAMPLE_RATES))} Hz; this "
              f"model takes {meta['sample_rate']} Hz")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from clar_ray.tune import run_study

    if args.job is None:
        raise ConfigError("the tune job YAML file is missing: clar-ray tune STUDY.yaml --out DIR")
    experiment = run_study(args.job, args.out, resume=args.resume, overrides=args.overrides,
                           address=args.address)
    print(f"experiment: {experiment}\nnext: clar-ray analyze {experiment}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from clar_ray.analyze import analyze_experiment

    report = analyze_experiment(args.experiment_dir, args.out)
    print(f"report: {report}")
    return 0


def quickstart_job() -> Path:
    """The packaged quickstart job (``clar_ray/jobs`` in a wheel, ``jobs/`` in a checkout)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / QUICKSTART_JOB, package.parent / QUICKSTART_JOB):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the packaged {QUICKSTART_JOB} is missing from {package}: "
                            f"reinstall clar-ray, or pass a job file")


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from clar_ray import storage
    from clar_ray.data.prepare import prepare_dataset
    from clar_ray.resources import ensure_ray
    from clar_ray.train import run_training

    out = Path(args.out).resolve()
    data_dir = str(out / "data")
    job = _load_job(args.job or str(quickstart_job()), [f"data.path={data_dir}",
                                                         *args.overrides])
    if storage.exists(str(out / "data" / "manifest.json")):
        print(f"data:  the synthetic clips prepared before in {data_dir}")
    else:
        ensure_ray(job)
        manifest = prepare_dataset("synthetic", data_dir, progress=sys.stderr.isatty())
        print(f"data:  {sum(s.rows for s in manifest.splits.values())} synthetic clips, "
              f"{len(manifest.labels)} classes, {manifest.sample_rate} Hz → {data_dir}")
    print(f"train: {job.objective.name} on {job.model.frontend} + {job.model.encoder} "
          f"(width {job.model.width}), {job.train.epochs} epochs, batch {job.train.batch_size}, "
          f"{job.data.label_fraction:.0%} of the labels", flush=True)
    summary = run_training(job, str(out / "run"), overwrite=True)
    _print_summary(summary)
    return 0


COMMANDS = {
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "embed": _cmd_embed,
    "export": _cmd_export,
    "tune": _cmd_tune,
    "analyze": _cmd_analyze,
    "quickstart": _cmd_quickstart,
}


def _claim_job(args: argparse.Namespace) -> None:
    """Take the job file back from ``--set`` when it followed the overrides.

    ``clar-ray train --set train.epochs=3 job.yaml``: ``--set`` takes one or more values, so
    argparse gives it the job too; a value without ``=`` is the job.
    """
    if not hasattr(args, "job") or not hasattr(args, "overrides"):
        return
    loose = [value for value in args.overrides if "=" not in value]
    if not loose:
        return
    if args.job is None and len(loose) == 1:
        args.job = loose[0]
        args.overrides = [value for value in args.overrides if value != loose[0]]
        return
    raise ConfigError(f"--set {loose[0]!r}: expected KEY=VALUE, e.g. --set train.epochs=3")


#: Exit codes: 2 for what the user can fix in the command or its files, 1 for a run that
#: failed, 130 for Ctrl-C.
_USER_ERRORS = (ConfigError, FileExistsError, FileNotFoundError, KeyError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``clar-ray`` command line; return the exit code.

    Every failure ends in one line on standard error naming the cause (and, where there is
    one, the fix); ``--verbose`` adds the traceback and leaves Ray's own logs on.
    """
    from clar_ray import console

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("--verbose", "-v") for a in argv)
    argv = [a for a in argv if a not in ("--verbose", "-v")]
    args = _parser().parse_args(argv)
    console.quiet_ray(verbose)
    try:
        _claim_job(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"clar-ray {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if verbose:
            import traceback

            traceback.print_exc()
        line, user_error = console.error_line(err, _USER_ERRORS)
        root = console.root_cause(err)
        # clar-ray's own message is the whole story unless it wraps another error (Ray's
        # failed start): then the traceback holds more.
        whole = type(root).__module__.startswith("clar_ray") and root.__cause__ is None
        hint = "" if verbose or user_error or whole else " (--verbose shows the traceback)"
        print(f"clar-ray {args.command}: error: {line}{hint}", file=sys.stderr)
        return 2 if user_error else 1

if __name__ == "__main__":
    sys.exit(main())
