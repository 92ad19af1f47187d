"""README.md holds: every shell command in it is run by a test, or says why it cannot be here.

:data:`CHECKS` maps each command of README.md's shell blocks to the tests that run it (a CPU-safe
variant where the paper's jobs need GPUs) or to the reason no test can (an AWS account, a GPU,
TensorFlow). A command added to README.md without an entry fails
:func:`test_every_readme_command_is_run_by_a_test_or_says_why_not`; an entry whose command left
README.md, or whose test does not exist, fails too.

The walk below runs README's "Using it" and export blocks as written, read from README.md
itself, in a scratch folder laid out like the checkout (``jobs/``, ``path/to/...`` sources),
through ``clar_ray.cli.main`` on one shared local Ray. Only three things differ from a user's
run: trainings get ``--set`` :data:`TINY` (one tiny epoch instead of 50 wide ones), the resume
trains one more epoch, and the 49-trial study is planned and written but Tune runs no trial
(``tests/test_tune.py`` runs a small study through the same ``clar-ray tune``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from clar_ray.cli import _claim_job, _parser, main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SHELL_BLOCKS = ("bash", "sh", "shell", "console")

#: What the walk adds to a README training: one epoch of a narrow model on small batches.
TINY = "train.epochs=1 model.width=4 train.batch_size=16 eval.probe_epochs=5"

# ---------------------------------------------------------------- README's commands


@dataclass(frozen=True)
class Command:
    """One command of a README shell block: its words (as the shell splits them) and section."""

    words: tuple[str, ...]
    section: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


def code_blocks(text: str) -> list[tuple[str, str, str]]:
    """``(section, info string, body)`` of every fenced block, in order."""
    blocks, section, fence, info, body = [], "", None, "", []
    for line in text.splitlines():
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        if fence is None:
            match = re.match(r"^(`{3,})\s*(\S*)\s*$", line)
            if match:
                fence, info, body = match.group(1), match.group(2), []
        elif re.match(rf"^{fence}\s*$", line):
            blocks.append((section, info, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: a ``` block in '{section}' is never closed"
    return blocks


def readme_commands(text: str = README) -> list[Command]:
    """Every command of the shell blocks: continuations joined, comments dropped, ``&&`` split."""
    commands = []
    for section, info, body in code_blocks(text):
        if info not in SHELL_BLOCKS:
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(Command(tuple(words[:cut]), section))
                words = words[cut + 1:]
    return commands


# ---------------------------------------------------------------- which test runs which


@dataclass(frozen=True)
class Check:
    """README commands (``pattern``, a regex on the words joined by spaces) and who runs them.

    ``tests`` names the tests (``FILE::FUNCTION``) that run the command or a CPU-safe variant;
    ``needs`` says instead why no test can run it here.
    """

    pattern: str
    tests: tuple[str, ...] = ()
    needs: str = ""


WALK = "tests/test_readme.py::test_using_it_runs_as_written"
#: The README sections whose commands the walk runs (elsewhere they repeat one of these).
WALKED = ("Using it", "Using the encoder elsewhere: export and the HEAR API")
EXPORT_WALK = "tests/test_readme.py::test_the_exported_file_runs_with_torch_alone_as_written"
CI = "tests/test_readme.py::test_ci_installs_and_tests_as_the_readme_says"
SUBMITTED = "tests/test_cluster.py::test_quickstart_runs_as_a_submitted_job"
AWS = "an AWS account and a bucket"

CHECKS: tuple[Check, ...] = (
    # Quick start
    Check(r"pip install -e \.\[test,tensorboard\]", (CI,)),
    Check(r"clar-ray quickstart",
          ("tests/test_cli.py::test_quickstart_prints_under_30_lines_one_per_epoch",)),
    Check(r"python -m pytest", (CI,)),
    # Using it
    Check(r"clar-ray prepare (fsdd|folder) --source path/to/\S+ --out data/\S+.*", (WALK,)),
    Check(r"clar-ray train jobs/quickstart\.yaml --out runs/\S+ --set data\.path=data/\S+.*",
          (WALK, "tests/test_export.py::test_clar_ray_export_of_a_trained_run")),
    Check(r"clar-ray train --out runs/fsdd-clar --resume", (WALK,)),
    Check(r"clar-ray evaluate runs/fsdd-clar", (WALK,)),
    Check(r"clar-ray embed runs/fsdd-clar --data data/fsdd --out fsdd-embeddings\.parquet",
          (WALK,)),
    Check(r"clar-ray tune jobs/study-augmentation-pairs\.yaml --out runs/pairs --set "
          r"data\.path=data/fsdd train\.use_gpu=false .*",
          (WALK, "tests/test_readme.py::test_the_cpu_study_fits_two_cores_without_a_gpu",
           "tests/test_tune.py::test_interrupted_study_resumes_and_runs_each_training_once")),
    Check(r"clar-ray analyze runs/pairs",
          (WALK, "tests/test_tune.py::test_analysis_of_the_study_draws_the_heatmap_tables_"
                 "and_curves")),
    # Using the encoder elsewhere
    Check(r"clar-ray export runs/mine --out mine\.pt",
          (EXPORT_WALK, "tests/test_export.py::test_clar_ray_export_of_a_trained_run")),
    Check(r"python -c import torch; m = torch\.jit\.load\('mine\.pt'\).*", (EXPORT_WALK,)),
    Check(r"python3 -m heareval\.embeddings\.runner clar_ray\.hear .*",
          needs="hear-eval-kit (TensorFlow) and the HEAR task data (GBs); "
                "tests/test_hear.py checks clar_ray.hear as hearvalidator does"),
    # Running on a cluster (AWS)
    Check(r"iam/create\.sh \S+",
          needs=f"{AWS}; tests/test_cluster_iam.py checks the policies it applies"),
    Check(r"clar-ray prepare speechcommands .*--out s3://.*",
          needs=f"{AWS} and a 2.3 GB download; tests/test_storage_s3.py prepares onto S3 "
                f"(moto), tests/test_recipes.py checks the download (mocked)"),
    Check(r"ray (up|down) -y cluster\.yaml",
          needs=f"{AWS}; tests/test_cluster.py validates cluster.yaml with Ray's schema"),
    Check(r"ray dashboard cluster\.yaml", needs=f"{AWS} (a running cluster)"),
    Check(r"export RAY_ADDRESS=http://localhost:8265",
          needs=f"{AWS}; tests/test_cluster_iam.py checks that only `ray job` and "
                f"`clar-ray analyze` follow it"),
    Check(r"ray job submit (?!--address http://127\.0\.0\.1).* -- clar-ray .*s3://YOUR-BUCKET.*",
          needs=f"{AWS} and GPU nodes; {SUBMITTED} submits a job the same way to a local head"),
    Check(r"ray job (logs --follow|status|stop) \S+", needs=f"{AWS} (a submitted job)"),
    Check(r"tensorboard --logdir s3://.*",
          needs=f"{AWS}; tests/test_cli.py runs the printed tensorboard command on a local run"),
    Check(r"aws s3 sync s3://.*", needs=AWS),
    # The job path on your own machine (token authentication)
    Check(r"ray get-auth-token --generate > /dev/null", (SUBMITTED,)),
    Check(r"export RAY_AUTH_MODE=token", (SUBMITTED,)),
    Check(r"ray start --head --dashboard-host=127\.0\.0\.1 .*", (SUBMITTED,)),
    Check(r"ray job submit --address http://127\.0\.0\.1:8265 --working-dir \. -- "
          r"clar-ray quickstart .*", (SUBMITTED,)),
    Check(r"ray stop", (SUBMITTED,)),
)


def checks_of(command: Command) -> list[Check]:
    return [c for c in CHECKS if re.fullmatch(c.pattern, command.text)]


def test_every_readme_command_is_run_by_a_test_or_says_why_not() -> None:
    commands = readme_commands()
    assert len(commands) > 20, commands  # the parser found the blocks
    unchecked = [c.text for c in commands if not checks_of(c)]
    assert not unchecked, ("README.md commands that no test runs: add the test and an entry to "
                           "CHECKS in tests/test_readme.py (or the reason it cannot run here):\n"
                           + "\n".join(unchecked))
    several = {c.text: [k.pattern for k in checks_of(c)] for c in commands
               if len(checks_of(c)) > 1}
    assert not several, several


def test_every_check_names_tests_that_exist_and_a_command_of_the_readme() -> None:
    commands = readme_commands()
    for check in CHECKS:
        assert bool(check.tests) != bool(check.needs), check
        assert any(re.fullmatch(check.pattern, c.text) for c in commands), (
            f"no README.md command matches {check.pattern!r}: drop or update the entry")
        for test in check.tests:
            path, _, name = test.partition("::")
            tree = ast.parse((REPO / path).read_text())
            names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
            assert name in names, f"{test} does not exist"


def test_the_parser_reads_continuations_comments_and_chains() -> None:
    text = ("## A\n```bash\n# a comment\nclar-ray train j.yaml --out r \\\n"
            "    --set \"a=1 b=2\"   # trailing\npip install x && clar-ray quickstart\n```\n"
            "```\nclar-ray not-a-shell-block\n```\n")
    assert [(c.words, c.section) for c in readme_commands(text)] == [
        (("clar-ray", "train", "j.yaml", "--out", "r", "--set", "a=1 b=2"), "A"),
        (("pip", "install", "x"), "A"), (("clar-ray", "quickstart"), "A")]
    with pytest.raises(AssertionError, match="never closed"):
        code_blocks("```bash\nx\n``` text after the fence does not close it\n")


def test_no_command_hides_in_a_block_that_is_not_shell() -> None:
    for section, info, body in code_blocks(README):
        if info in SHELL_BLOCKS:
            continue
        for line in body.splitlines():
            assert not re.match(r"^(\$ |clar-ray |ray |python )", line), (section, line)


# ---------------------------------------------------------------- help that holds


def _block_commands() -> list[list[str]]:
    """The ``clar-ray ...`` part of README's shell commands (also of a submitted job's)."""
    return [list(c.words[c.words.index("clar-ray"):]) for c in readme_commands()
            if "clar-ray" in c.words]


def _inline_commands() -> list[list[str]]:
    """``clar-ray ...`` in README's inline code spans and shell blocks, as words."""
    spans = re.findall(r"(?<!`)`(clar-ray [^`]+)`(?!`)", README)
    return [shlex.split(span.replace("[", " ").replace("]", " ")) for span in spans] + \
        _block_commands()


def test_every_clar_ray_command_and_option_in_the_readme_exists() -> None:
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices)
    global_flags = {s for a in parser._actions for s in a.option_strings}
    seen = 0
    for words in _inline_commands():
        name = words[1]
        if name.startswith("-"):
            assert name in global_flags, words
            continue
        if name.isupper():  # `clar-ray COMMAND --help`
            continue
        assert name in subparsers.choices, f"README names `clar-ray {name}`: no such command"
        flags = {s for a in subparsers.choices[name]._actions for s in a.option_strings}
        for word in words[2:]:
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                assert flag in flags | global_flags, f"README: `clar-ray {name}` has no {flag}"
        seen += 1
    assert seen > 15


def test_readme_commands_parse_as_the_cli_reads_them() -> None:
    """Each README clar-ray command parses, with its job where README puts it."""
    for words in _block_commands():
        args = _parser().parse_args(words[1:])
        _claim_job(args)
        if getattr(args, "job", None) is not None:
            assert args.job.endswith(".yaml"), words


def test_ci_installs_and_tests_as_the_readme_says() -> None:
    """.ci/run installs with README's extras and runs README's test command."""
    ci = [shlex.split(line, comments=True) for line in (REPO / ".ci" / "run").read_text()
          .splitlines()]
    install = next(c for c in readme_commands() if c.words[:2] == ("pip", "install"))
    test = next(c for c in readme_commands() if c.words[-2:] == ("-m", "pytest"))
    assert any(words[-len(install.words[2:]):] == list(install.words[2:])
               and "pip" in words and "install" in words for words in ci), (install, ci)
    assert any(words[-2:] == ["-m", "pytest"] for words in ci), ci
    assert test.words[0].startswith("python")


# ---------------------------------------------------------------- the study on a CPU


def test_the_cpu_study_fits_two_cores_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """README's one-machine study plans on two cores and 8 GiB, no GPU, as a local Ray would."""
    from clar_ray import preflight
    from clar_ray.resources import plan_study, study_local_cpus
    from clar_ray.study import expand_trials, load_tune

    (command,) = [c for c in readme_commands() if c.words[:2] == ("clar-ray", "tune")
                  and "train.use_gpu=false" in c.text]
    args = _parser().parse_args([*command.words[1:]])
    _claim_job(args)
    spec = load_tune(REPO / args.job, args.overrides)
    jobs = [trial.job for trial in expand_trials(spec)]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cpus = study_local_cpus(jobs, spec.max_concurrent_trials)
    plan = plan_study(jobs, cluster_cpus=cpus, cluster_gpus=0,
                      max_concurrent=spec.max_concurrent_trials)
    assert len(jobs) == 49 and plan.concurrency >= 1
    laptop = {"cores": 2, "free_bytes": 8 * 2**30}  # two cores, 8 GiB free
    manifest = SimpleNamespace(sample_rate=16000, clip_samples=16000, labels=list("0123456789"))
    for job in jobs:
        preflight.check_local_gpus(job, gpus=0)
        preflight.check_local_fit(job, manifest, **laptop, parameters=10**6)


# ---------------------------------------------------------------- the walk


def _write_wav(path: Path, hz: float, seed: int, sample_rate: int = 8000) -> None:
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(sample_rate // 2) / sample_rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wave.astype(np.float32), sample_rate, subtype="PCM_16")


def _sources(root: Path) -> None:
    """The ``path/to/...`` sources README names: a small FSDD and a folder of classes."""
    fsdd = root / "path" / "to" / "free-spoken-digit-dataset" / "recordings"
    for digit in range(4):  # takes 0-4 are test: 40 test and 64 training clips
        for speaker in ("jackson", "theo"):
            for take in range(13):
                _write_wav(fsdd / f"{digit}_{speaker}_{take}.wav", 300 + 200 * digit,
                           seed=digit * 100 + take)
    for i, name in enumerate(("bird", "bell")):
        for clip in range(10):
            _write_wav(root / "path" / "to" / "CLASS_FOLDERS" / name / f"{clip}.wav",
                       400 + 900 * i, seed=clip)


class _NoTrials:
    """A Tune grid that runs no trial: the walk stops the 49-trial study where Tune starts."""

    def fit(self) -> list[object]:
        return []


@dataclass
class Done:
    command: Command
    code: int
    out: str
    seconds: float = 0.0


def _run(command: Command, root: Path) -> Done:
    out = io.StringIO()
    if command.words[0] == "clar-ray":
        argv = list(command.words[1:])
        if argv[0] == "train":
            argv += ["--set", "train.epochs=2" if "--resume" in argv else TINY]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
        return Done(command, code, out.getvalue())
    if command.words[0] == "python":  # the interpreter of this test
        done = subprocess.run([sys.executable, *command.words[1:]], cwd=root,
                              capture_output=True, text=True, timeout=300)
        return Done(command, done.returncode, done.stdout + done.stderr)
    raise AssertionError(f"the walk cannot run {command.text}")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Done]]]:
    """README's "Using it" and export commands, run in order in a checkout-like folder."""
    import ray

    from clar_ray import tune

    root = tmp_path_factory.mktemp("readme")
    (root / "jobs").symlink_to(REPO / "jobs")
    _sources(root)
    runnable = [c for c in readme_commands() if c.section in WALKED
                and {WALK, EXPORT_WALK} & {t for k in checks_of(c) for t in k.tests}]
    cwd = Path.cwd()
    os.chdir(root)
    # Ray's workers import this checkout's clar_ray, whatever the folder or the installed copy.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tune, "_tuner", lambda *args, **kwargs: _NoTrials())
            patch.delenv("RAY_ADDRESS", raising=False)
            done = {}
            for command in runnable:
                started = time.monotonic()
                done[command.text] = _run(command, root)
                done[command.text].seconds = time.monotonic() - started
                print(f"{done[command.text].seconds:6.1f} s  {command.text[:90]}",
                      file=sys.stderr)
                if done[command.text].code != 0:
                    break
        yield root, done
    finally:
        ray.shutdown()
        os.chdir(cwd)


def _done(walk: tuple[Path, dict[str, Done]], *words: str) -> Done:
    """The walk's run of the README command that starts with ``words``."""
    _, done = walk
    for text, result in done.items():
        if text.startswith(" ".join(words)):
            assert result.code == 0, f"`{text}` exited {result.code}:\n{result.out[-3000:]}"
            return result
    raise AssertionError(f"the walk ran no command starting with {' '.join(words)!r}: "
                         f"{list(done)}")


def test_using_it_runs_as_written(walk: tuple[Path, dict[str, Done]]) -> None:
    root, done = walk
    failed = {t: d.out[-2000:] for t, d in done.items() if d.code != 0}
    assert not failed, failed
    names = [c.text for c in readme_commands() if c.section == "Using it"]
    assert [t for t in done if t in names] == names  # every command of the block, in order

    fsdd = json.loads((root / "data" / "fsdd" / "manifest.json").read_text())
    assert {s: v["rows"] for s, v in fsdd["splits"].items()} == {"train": 64, "test": 40}
    mine = json.loads((root / "data" / "mine" / "manifest.json").read_text())
    assert {s: v["rows"] for s, v in mine["splits"].items()} == {"train": 16, "test": 4}

    run = root / "runs" / "fsdd-clar"
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == [0, 1]  # one epoch, then one more by `--resume` from its config.yaml
    assert "epoch 2/2" in _done(walk, "clar-ray", "train", "--out", "runs/fsdd-clar").out
    out = _done(walk, "clar-ray", "evaluate").out
    evaluated, _ = json.JSONDecoder().raw_decode(out, out.index("{"))
    assert evaluated["epoch"] == 2 and 0 <= evaluated["linear_top1"] <= 1
    assert json.loads((run / "result.json").read_text())["epoch"] == 2

    table = pq.read_table(root / "fsdd-embeddings.parquet")
    assert table.num_rows == 104 and len(set(table["sample_id"].to_pylist())) == 104

    planned = json.loads((root / "runs" / "pairs" / "trials.json").read_text())
    assert len(planned["trials"]) == 49
    assert "clar-ray tune: 49 trial(s)" in _done(walk, "clar-ray", "tune").out
    assert (root / "runs" / "pairs" / "report" / "report.md").is_file()
    assert "report:" in _done(walk, "clar-ray", "analyze").out


def test_the_exported_file_runs_with_torch_alone_as_written(
        walk: tuple[Path, dict[str, Done]]) -> None:
    root, _ = walk
    assert (root / "runs" / "mine" / "encoder.pt").is_file()
    assert "wrote mine.pt" in _done(walk, "clar-ray", "export").out
    shape = _done(walk, "python", "-c").out.strip().splitlines()[-1]
    assert re.fullmatch(r"torch\.Size\(\[2, \d+\]\)", shape), shape
