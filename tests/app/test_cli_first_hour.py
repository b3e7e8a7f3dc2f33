"""What a new user meets at the command line: short argument errors, full help, early checks.

(Issue: "The first hour".) Each test runs the real parser or command through ``main``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest

import suimseg.app.recipe
from suimseg.app import cli
from suimseg.app.cli import build_parser, main
from suimseg.app.config import TrainConfig, default_workers


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_misspelled_flag_shows_the_subcommands_usage_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "x", "--epocs", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: suimseg train --data ROOT")
    assert "unrecognized arguments: --epocs 2 (did you mean --epochs?)" in err
    assert len(lines) <= 4, err


def test_value_errors_are_short_and_name_the_dashed_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "x", "--batch_size", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: expected a positive integer, got '0'" in err
    assert "--batch_size" not in err
    assert len(err.strip().splitlines()) <= 4, err


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_has_help_and_no_underscore_alias_is_shown(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _subparsers()[command]
    assert parser.description, f"{command} has no description"
    for action in parser._actions:
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert not [w for w in text.split() if w.startswith("--") and "_" in w], text
    assert len(text.splitlines()[0]) <= 100  # the usage line is short


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = TrainConfig()
    assert f"number of epochs (default: {d.epochs})" in text
    assert f"(default: {d.image_size})" in text
    assert "(default: 512,256,128,64)" in text
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "images per forward pass (default: 8)" in text
    assert "(default: [])" not in text


def test_underscore_spellings_still_parse() -> None:
    args = build_parser().parse_args(
        ["train", "--data", "d", "--batch_size", "3", "--no-channels_last", "--enc_lr_mult", "1"]
    )
    assert (args.batch_size, args.channels_last, args.enc_lr_mult) == (3, False, 1.0)


def test_train_checks_the_data_folder_before_building_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("train() ran although the data folder is missing")

    monkeypatch.setattr(suimseg.app.recipe, "train", explode)
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"SUIM root folder not found: {tmp_path / 'nope'}" in err
    assert "Traceback" not in err


def test_missing_checkpoint_is_one_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may be raised on the way
        code = main(["evaluate", "--checkpoint", "nope.pt", "--data", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "suimseg: error: --checkpoint nope.pt: does not exist; give the path of a checkpoint "
        "written by 'suimseg train' (e.g. runs/v3/best.pt), a .safetensors export or a "
        "Lightning .ckpt of SUIMSegModule"
    )


def test_warnings_reach_a_cli_user_as_one_plain_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def warn(_: argparse.Namespace) -> int:
        warnings.warn("the thing is odd", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "_cmd_info", warn)
    assert main(["info"]) == 0
    assert capsys.readouterr().err == "suimseg: warning: the thing is odd\n"


def test_synth_twice_names_the_flag_not_the_python_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["synth", str(tmp_path / "s"), "--n-train-val", "2", "--n-test", "1", "--size", "32x24"]
    assert main(argv) == 0
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "add --overwrite" in err
    assert "overwrite=True" not in err
    assert main([*argv, "--overwrite"]) == 0


def test_workers_default_never_exceeds_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert default_workers() == 2
    assert TrainConfig().workers == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(64)), raising=False)
    assert TrainConfig().workers == 4
    assert TrainConfig(workers=7).workers == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", str(2**70)], "--seed: expected at most 9223372036854775807"),
        (["--image-size", "200000"], "--image-size: expected at most 8192"),
        (["--batch-size", "1", "--image-size", "32"], "1x1 bottleneck"),
        (["--bridge-channels", "4000000"], "--bridge-channels: expected at most 16384"),
    ],
)
def test_out_of_bounds_values_are_usage_errors_not_tracebacks(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 4


def test_malformed_history_line_is_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text('{"epoch": 1, "train_loss": 0.5}\nnot json\n{"epoch": 3}\n')
    assert main(["plot", str(history), "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"suimseg: error: {history}:2: expected one JSON object")
    assert "Traceback" not in err


def test_convert_to_an_unknown_suffix_names_the_cli_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "best.pt"
    source.write_bytes(b"not read: the format is checked first")
    assert main(["convert", str(source), str(tmp_path / "model.txt")]) == 1
    err = capsys.readouterr().err.strip()
    assert "got dest" in err
    assert "model.txt" in err
    assert "suimseg convert --to" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["plot", "{tmp}/nope", "--out", "{tmp}/c.png"], "or its run folder"),
        (["compare", "{tmp}/nope.json"], "written by suimseg evaluate"),
    ],
)
def test_missing_input_files_say_what_to_pass(
    argv: list[str], hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("suimseg: error: ")
    assert "does not exist; pass " in err
    assert hint in err


def test_demo_summary_aligns_the_two_mious_and_lists_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import suimseg.app.demo
    from suimseg.app.demo import DemoResult
    from suimseg.metrics import SegmentationMetrics

    def fake_run_demo(out_dir: str, **_: object) -> DemoResult:
        confusion = torch.diag(torch.arange(1, 9))
        confusion[0, 1] = 5
        metrics = SegmentationMetrics.from_confusion(confusion)
        majority = SegmentationMetrics.from_confusion(torch.ones(8, 8, dtype=torch.int64))
        return DemoResult(Path(out_dir), metrics, majority, "background / waterbody", 12.0)

    monkeypatch.setattr(suimseg.app.demo, "run_demo", fake_run_demo)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    mious = [line for line in lines if line.startswith("mIoU of")]
    assert len(mious) == 2
    assert mious[0].index("%") == mious[1].index("%"), mious
    assert "wrote in 12 s:" in lines
    listed = [line.split()[0] for line in lines if line.startswith(f"  {out}")]
    assert listed == [str(out / n) for n in ("metrics.json", "data", "run", "figures", "overlays")]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_usage_line_uses_the_metavars_of_the_options_help(command: str) -> None:
    """'[--seed N]' in the usage but '--seed SEED' under options reads as two options."""
    import re

    parser = _subparsers()[command]
    metavars = {
        flag: action.metavar or action.dest.upper()
        for action in parser._actions
        for flag in action.option_strings
        if action.nargs != 0
    }
    usage = parser.format_usage()
    for flag, value in re.findall(r"(--[a-z0-9-]+) ([A-Z][A-Z0-9_]*)\b", usage):
        assert metavars.get(flag) == value, f"suimseg {command}: {flag} {value} in {usage!r}"
