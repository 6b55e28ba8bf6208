"""Options declared once as dataclass fields: the parser, the help and the config all come from
that one declaration, and only what the command line gives overrides a preset."""

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import pytest
from conftest import script

from vggfeat import options
from vggfeat.cli.common import resolve_models
from vggfeat.options import add_options, from_args, option


@dataclass
class Base:
    root: Path = option(help="where the data lives")
    scales: tuple[int, ...] = option((256, 384), help="smallest sides Q")
    jitter: tuple[int, int] | None = option(None, help="(Smin, Smax)")
    width: float | None = option(None, help="channel multiplier (default: what the weights hold)")
    cache: bool = option(True, help="keep features on disk")
    mode: Literal["dense", "multicrop"] = "dense"
    names: list[str] = option(["a"], help="class names")
    grid: tuple[tuple[float, ...], ...] = option(((1.0, 0.0), (0.0, 1.0)), help="a matrix, row-major")
    seed: int = 0  # a trailing comment is not help: help is option(help=...) only


@dataclass
class Child(Base):
    # redeclared without a help: keeps the parent's help
    scales: tuple[int, ...] = (512,)


def parse(cls, argv, base=None):
    p = argparse.ArgumentParser()
    add_options(p, cls, base)
    return p, from_args(cls, p.parse_args(argv), base)


def test_types_from_the_hints_and_defaults_from_the_fields():
    _, cfg = parse(Base, ["--root", "r"])
    assert cfg == Base(root=Path("r"))
    _, cfg = parse(
        Base,
        "--root r --scales 1 2 3 --jitter 4 5 --width 0.5 --no-cache --mode multicrop --names x y "
        "--grid 1 2 3 4 --seed 7".split(),
    )
    assert cfg == Base(
        root=Path("r"),
        scales=(1, 2, 3),
        jitter=(4, 5),
        width=0.5,
        cache=False,
        mode="multicrop",
        names=["x", "y"],
        grid=((1.0, 2.0), (3.0, 4.0)),
        seed=7,
    )
    assert isinstance(cfg.root, Path) and isinstance(cfg.seed, int) and isinstance(cfg.width, float)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--scales", "1"], "--root"),  # no default: required
        (["--root", "r", "--jitter", "1"], "--jitter"),  # tuple[int, int]: exactly two
        (["--root", "r", "--mode", "x"], "invalid choice"),
        (["--root", "r", "--seed", "x"], "invalid int"),
    ],
)
def test_bad_values_are_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit):
        parse(Base, argv)
    assert words in capsys.readouterr().err


def test_help_from_option_with_every_default():
    p, _ = parse(Child, ["--root", "r"])
    text = " ".join(p.format_help().split())
    assert "where the data lives (required)" in text
    assert "smallest sides Q (default: 512)" in text  # the parent's help, the child's default
    assert "keep features on disk (default: True)" in text and "--no-cache" in text
    assert "class names (default: a)" in text
    assert "channel multiplier (default: what the weights hold)" in text  # its own words, once
    assert "trailing comment" not in text and "--seed SEED (default: 0)" in text
    assert "(Smin, Smax) (default: None)" in text


def test_only_given_options_override_a_base():
    preset = Base(root=Path("p"), scales=(9,), cache=False, seed=3)
    p, cfg = parse(Base, ["--seed", "4"], base=preset)
    assert cfg == replace(preset, seed=4)  # --scales' and --cache's defaults did not reset the preset
    assert "(default: 9)" in p.format_help()  # help shows the preset's values
    assert options.given(Base, p.parse_args(["--cache"])) == {"cache": True}


SVM_SCRIPTS = ("voc_svm", "caltech_svm", "voc_action_svm")


@pytest.mark.parametrize("name", [*SVM_SCRIPTS, "ilsvrc_eval"])
def test_every_config_field_is_a_flag_with_the_configs_default(name, tmp_path):
    mod = script(name)
    where = ["--data", "val"] if name == "ilsvrc_eval" else ["--root", str(tmp_path)]
    p = mod.get_args_parser()
    cfg = mod.config_from_args(p.parse_args(where))
    assert cfg == (mod.Config(data="val") if name == "ilsvrc_eval" else mod.Config(root=tmp_path))
    helptext = p.format_help()
    flags = {"models": "--model"}
    for f in fields(mod.Config):
        assert flags.get(f.name, "--" + f.name.replace("_", "-")) in helptext, (name, f.name)


def test_svm_scripts_keep_their_flags(tmp_path):
    voc = script("voc_svm")
    argv = "--root R --year 2012 --model D --weights none --model E --weights e.pth --no-cache --download "
    argv += "--c-grid 1 2 --max-images 6 --classes cat dog --scales 224 --aggregate stack --width 0.5 "
    argv += "--fc-dim 32 --batch-size 2 --device cpu --seed 3 --out O"
    cfg = voc.config_from_args(voc.get_args_parser().parse_args(argv.split()))
    assert cfg.weights == ["none", "e.pth"]  # as given: resolved where the nets are built
    resolve_models(cfg)
    assert (cfg.year, cfg.models, cfg.weights, cfg.cache, cfg.download) == (
        2012,
        ["D", "E"],
        [None, "e.pth"],
        False,
        True,
    )
    assert (cfg.c_grid, cfg.max_images, cfg.classes, cfg.scales, cfg.aggregate) == (
        (1.0, 2.0),
        6,
        ("cat", "dog"),
        (224,),
        "stack",
    )
    assert (cfg.width, cfg.fc_dim, cfg.batch_size, cfg.device, cfg.seed, cfg.out) == (
        0.5,
        32,
        2,
        "cpu",
        3,
        Path("O"),
    )
    cal = script("caltech_svm")
    cfg = cal.config_from_args(
        cal.get_args_parser().parse_args("--root R --dataset caltech256 --no-background".split())
    )
    assert (cfg.background, cfg.aggregate, cfg.train_per_class, cfg.out) == (
        False,
        "stack",
        60,
        Path("runs/caltech256_D"),
    )
    act = script("voc_action_svm")
    cfg = act.config_from_args(act.get_args_parser().parse_args(["--root", "R", "--weights", "none"]))
    resolve_models(cfg)
    assert (cfg.models, cfg.weights, cfg.scales) == (["D", "E"], [None, None], None)  # set by the nets
    assert cfg.PAPER_SCALES == (256, 384, 512, 640, 768)
    ils = script("ilsvrc_eval")
    cfg = ils.config_from_args(
        ils.get_args_parser().parse_args("--data V --protocols multi,both --jitter 128 256".split())
    )
    assert (cfg.protocols, cfg.jitter, resolve_models(cfg).weights) == (
        ("multi", "both"),
        (128, 256),
        ["default"],
    )
    wrong = ils.Config(data="V", models=["D", "E"], weights=["d.pth"])  # constructing checks nothing
    with pytest.raises(SystemExit, match="one per --model"):
        resolve_models(wrong)


def _documented_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{flag: help}`` of a parser's shown options (its -h and hidden flags aside)."""
    return {
        a.option_strings[-1]: a.help
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    }


@pytest.mark.parametrize("name", ["extract_throughput", "store_memory", "train_throughput"])
def test_benchmark_options_have_help_and_show_their_default(name):
    mod = script(name)
    flags = _documented_flags(mod.get_args_parser())
    assert {f.name for f in fields(mod.Config)} == {f[2:].replace("-", "_") for f in flags}
    assert all(h and "(default: " in h for h in flags.values()), flags
    assert from_args(mod.Config, mod.get_args_parser().parse_args([])) == mod.Config()


def test_info_and_convert_options_have_help_and_show_their_default():
    from vggfeat.cli.command import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, want in (("info", {"--weights", "--model"}), ("convert", {"--config", "--preprocess"})):
        flags = _documented_flags(sub.choices[command])
        assert set(flags) == want and all("(default: " in h for h in flags.values()), flags


def test_a_matrix_of_the_wrong_size_is_a_parse_error_naming_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        parse(Base, "--root r --grid 1 2 3".split())
    assert e.value.code == 2  # argparse's status for a command-line error
    err = capsys.readouterr().err
    assert (
        err.startswith("usage:")
        and "error: --grid: expected a multiple of 2 values (rows of 2), got 3" in err
    )


def test_a_declared_range_is_checked_when_parsing_each_value_and_by_check_ranges():
    @dataclass
    class C:
        n: int = option(2, at_least=1, help="count")
        lr: float = option(0.1, above=0)
        qs: tuple[int, ...] = option((3,), at_least=1, at_most=10)
        k: int | None = option(None, at_least=0)

    p = argparse.ArgumentParser(prog="x", exit_on_error=False)
    add_options(p, C)
    assert from_args(C, p.parse_args(["--n", "1", "--lr", "1e-9", "--qs", "1", "10", "--k", "0"])) == C(
        1, 1e-9, (1, 10), 0
    )
    for argv, words in (
        (["--n", "0"], "0: must be at least 1"),
        (["--lr", "0"], "0.0: must be above 0"),
        (["--qs", "3", "11"], "11: must be at least 1 and at most 10"),
        (["--k", "-1"], "-1: must be at least 0"),
    ):
        with pytest.raises(argparse.ArgumentError, match=words):
            p.parse_args(argv)
    options.check_ranges(C())  # the defaults (and None) pass
    with pytest.raises(ValueError, match=r"--qs 0: must be at least 1 and at most 10"):
        options.check_ranges(C(qs=(2, 0)))
    assert "count (default: 2)" in p.format_help()  # the help is unchanged
