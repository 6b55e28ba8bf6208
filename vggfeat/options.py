"""Command-line options declared once, as the fields of a config dataclass.

Each field is one option: its name gives the flag (``batch_size`` -> ``--batch-size``), its type
hint the parsing, its default the value shown in ``--help`` (unless the help says ``default: ...``
itself), and :func:`option` its help::

    @dataclass
    class Config:
        root: Path = option(help="no default: a required option")
        scales: tuple[int, ...] = option((256, 384, 512), help="smallest sides Q")
        cache: bool = option(True, help="--cache / --no-cache")
        aggregate: Literal["mean", "stack"] = option("mean", help="choices from the Literal")

    p = argparse.ArgumentParser()
    add_options(p, Config)
    cfg = from_args(Config, p.parse_args())

Help is written one way, ``option(help=...)``, beside the argparse keywords it may need; a field
redeclared in a subclass with a new default keeps its parent's help. A malformed value (a matrix
of the wrong size) is reported by the parser (``parser.error``: usage, the option, exit status 2).

Options left off the command line keep the default (or the value of ``base``, e.g. a preset):
the parser stores only what was given (``argparse.SUPPRESS``), so a preset's value is never
overwritten by a flag's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing

__all__ = [
    "option", "add_options", "given", "from_args", "check_ranges", "in_range",
    "PRECISIONS", "Precision", "PrecisionOption",
]  # fmt: skip

RANGE_KEYS = ("at_least", "above", "at_most")  # option() keywords of a numeric range
# The one precision option of the library (extract, Extractor, VGGFeatures, posteriors,
# run_protocols, the commands and the benchmark scripts); the policy behind "auto" is
# vggfeat.features.precision.
Precision = typing.Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
PRECISION_HELP = (
    "what the net computes in: auto (bf16 where the device runs it natively and faster: CUDA with "
    "bf16 tensor cores, CPUs with AMX; else fp32), fp32, bf16 (torch.autocast), fp16 (CUDA only); "
    "`vggfeat info` says what auto picks here"
)


def option(default=dataclasses.MISSING, *, help=None, show=None, **argparse_kw) -> dataclasses.Field:
    """A dataclass field with command-line metadata: ``help``; ``show``, the default as ``--help``
    states it when the value itself is not telling (a string, or a function of the dataclass);
    a numeric range, ``at_least=``, ``above=`` and ``at_most=``, checked when the value is
    parsed (each value of a list) and by :func:`check_ranges`; and argparse keywords
    (``flag="--model"``, ``action="append"``, ``type=parse``, ``choices=``) that replace what the
    type hint implies.
    Mutable defaults (lists) are copied per instance."""
    meta = {"help": help, "show": show, **argparse_kw}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=functools.partial(type(default), default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def in_range(name: str, value, *, at_least=None, above=None, at_most=None):
    """``value`` if it lies in the range, else ValueError naming ``name`` (a flag or keyword),
    the value and the range. None (an option left to its default) passes."""
    if value is None or isinstance(value, bool):
        return value
    for v in value if isinstance(value, (list, tuple)) else (value,):
        bad = (
            (at_least is not None and v < at_least)
            or (above is not None and v <= above)
            or (at_most is not None and v > at_most)
        )
        if bad:
            want = [
                f"at least {at_least}" * (at_least is not None),
                f"above {above}" * (above is not None),
                f"at most {at_most}" * (at_most is not None),
            ]
            raise ValueError(f"{name} {v}: must be {' and '.join(w for w in want if w)}")
    return value


def _ranged(parse, flag: str, bounds: dict):
    """An argparse ``type`` that parses, then checks the range (a one-line parser error)."""

    def checked(text):
        value = parse(text)
        try:
            return in_range(flag, value, **bounds)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)[len(flag) + 1 :]) from None  # argparse names the flag

    checked.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in errors
    return checked


def check_ranges(obj) -> None:
    """Check every field of the dataclass instance ``obj`` that declares a range (as the parser
    does): the same checks for the Python API and presets as for the command line."""
    for f in dataclasses.fields(obj):
        bounds = {k: f.metadata[k] for k in RANGE_KEYS if k in f.metadata}
        if bounds:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            in_range(flag, getattr(obj, f.name), **bounds)


def _help(cls, f: dataclasses.Field, default) -> str:
    text = f.metadata.get("help")
    for klass in cls.__mro__[1:]:  # a field redeclared with a new default keeps its parent's help
        if text:
            break
        parent = getattr(klass, "__dataclass_fields__", {}).get(f.name)
        text = parent.metadata.get("help") if parent is not None else None
    show = f.metadata.get("show")
    if default is dataclasses.MISSING:
        text = f"{text or ''} (required)"
    elif "default:" not in (text or ""):  # a help that states its default keeps its own words
        shown = (show(cls) if callable(show) else show) or (
            " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        )
        text = f"{text or ''} (default: {shown})"
    text = text.strip()
    return text.replace("%", "%%")


def _strip_optional(hint):
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _parse_kw(hint) -> dict:
    """argparse keywords for a type hint: bools as ``--x/--no-x``, tuples and lists as ``nargs``
    (a fixed-length tuple takes exactly that many values), ``Literal`` as choices."""
    hint = _strip_optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if origin is typing.Literal:
        return dict(choices=list(args), type=type(args[0]))
    if origin in (tuple, list):
        inner = _strip_optional(args[0]) if args else str
        if typing.get_origin(inner) is tuple:  # a matrix, given row-major
            return dict(nargs="+", type=typing.get_args(inner)[0], metavar="V")
        fixed = origin is tuple and Ellipsis not in args
        return dict(nargs=len(args) if fixed else "+", type=inner)
    return dict(type=hint)


def _is_matrix(hint) -> bool:
    args = typing.get_args(_strip_optional(hint))
    return bool(args) and typing.get_origin(_strip_optional(args[0])) is tuple


class _Rows(argparse.Action):
    """A matrix option's values, row-major: a count that is no multiple of the row length is
    reported by the parser, naming the option, before any work starts."""

    def __init__(self, *args, row: int, **kw):
        super().__init__(*args, **kw)
        self.row = row

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) % self.row:
            parser.error(
                f"{option_string}: expected a multiple of {self.row} values (rows of {self.row}), "
                f"got {len(values)}"
            )
        setattr(namespace, self.dest, values)


def _default(f: dataclasses.Field, base):
    if base is not None:
        return getattr(base, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_options(parser: argparse.ArgumentParser, cls, base=None, *, exclude=()) -> None:
    """One flag per field of the dataclass ``cls`` (except ``exclude``); ``base``, an instance,
    supplies the defaults ``--help`` shows. A field without a default is a required option."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        default = _default(f, base)
        kw = _parse_kw(hints[f.name])
        kw.update({k: v for k, v in f.metadata.items() if k not in ("help", "show", "flag", *RANGE_KEYS)})
        bounds = {k: f.metadata[k] for k in RANGE_KEYS if k in f.metadata}
        if bounds and kw.get("type") is not None:
            kw["type"] = _ranged(
                kw["type"], f.metadata.get("flag") or "--" + f.name.replace("_", "-"), bounds
            )
        if kw.get("action") not in (None, "store", argparse.BooleanOptionalAction):
            kw.pop("nargs", None)
        required = default is dataclasses.MISSING
        if _is_matrix(hints[f.name]) and default and not required:  # rows as long as the default's
            kw["action"] = functools.partial(_Rows, row=len(default[0]))
        parser.add_argument(
            f.metadata.get("flag") or "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=argparse.SUPPRESS,
            required=required,
            help=_help(cls, f, default),
            **kw,
        )


def _convert(hint, value, like):
    """A parsed value in the field's type: tuples as tuples, a matrix reshaped as ``like`` is."""
    hint = _strip_optional(hint)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        if _is_matrix(hint):
            n = len(like[0]) if like else len(value)
            if len(value) % n:
                raise SystemExit(f"error: expected a multiple of {n} values (rows of {n}), got {len(value)}")
            return tuple(tuple(value[i : i + n]) for i in range(0, len(value), n))
        return tuple(value)
    return value


def given(cls, args: argparse.Namespace) -> dict:
    """The fields of ``cls`` given on the command line, converted to their types."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: _convert(hints[f.name], getattr(args, f.name), _default(f, None))
        for f in dataclasses.fields(cls)
        if hasattr(args, f.name)
    }


def from_args(cls, args: argparse.Namespace, base=None):
    """An instance of ``cls``: ``base`` (or the defaults) with the options given on the command line."""
    values = given(cls, args)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


@dataclasses.dataclass(kw_only=True)
class PrecisionOption:
    """The ``--precision`` option, for the option dataclasses of the commands and scripts."""

    precision: Precision = option("auto", help=PRECISION_HELP)
