"""How ``--help`` reads: like curl's and dig's, not like a Python signature.

Typer's own layout prints a type after every option (``--version <bool>``,
``--count <int>``), puts required arguments in braces and cuts command summaries at the
terminal width. Here an option shows its names and, when it takes a value, one metavar:
the one given to ``typer.Option(metavar=...)`` or else its name in capitals (argparse's
convention: ``-c, --count COUNT``). Flags show no metavar. Arguments show their metavar
in the usage line (``TARGET...``, ``[WORD]...``) and their help below it. Defaults are
shown when they say something (not for flags, not for ``None``).

The root :class:`PlainGroup` gives every command and group below it this layout, including
commands that modules register later, so no command needs to ask for it.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

# typer vendors click (typer._click): parameters are told apart by their param_type_name,
# not by click's classes.

__all__ = ["PlainCommand", "PlainGroup"]


def _metavar(param: Any) -> str:
    if param.metavar:
        return param.metavar
    name = (param.name or "value").upper().replace("_", "-")
    return name


def _argument_usage(param: Any) -> str:
    name = _metavar(param)
    if name.startswith("["):
        return name  # written out in full, as dig's words are
    repeat = param.nargs != 1 and not name.endswith("...")
    if not param.required:
        name = f"[{name}]"
    return f"{name}..." if repeat else name


def _default_text(param: Any) -> str | None:
    if param.is_flag or param.count or not param.show_default:
        return None
    default = param.default
    if default is None or callable(default) or default == () or default == []:
        return None
    if isinstance(default, list | tuple):
        return ", ".join(str(x) for x in default)
    return str(default)


def _option_record(param: Any) -> tuple[str, str]:
    names = sorted(param.opts, key=lambda opt: (opt.startswith("--"), opt))
    text = ", ".join(names)
    if param.secondary_opts:
        text += " / " + ", ".join(param.secondary_opts)
    if not param.is_flag and not param.count:
        text += f" {_metavar(param)}"
    help_text = param.help or ""
    extra: list[str] = []
    default = _default_text(param)
    if default is not None:
        extra.append(f"default: {default}")
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        extra.append(f"{low} to {high}")
    elif low is not None:
        extra.append(f"at least {low}")
    elif high is not None:
        extra.append(f"at most {high}")
    if extra:
        help_text = f"{help_text}  [{'; '.join(extra)}]" if help_text else f"[{'; '.join(extra)}]"
    return text, help_text


def _write_params(command: Any, ctx: Any, formatter: Any) -> None:
    arguments: list[tuple[str, str]] = []
    options: list[tuple[str, str]] = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append((_argument_usage(param), getattr(param, "help", None) or ""))
        elif param.param_type_name == "option":
            options.append(_option_record(param))
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            pieces.append(_argument_usage(param))
    return pieces


class PlainCommand(TyperCommand):
    """A command whose help is laid out as this module describes."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _write_params(self, ctx, formatter)


class PlainGroup(TyperGroup):
    """A group with this layout, that gives it to every command and group below it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _adopt(self)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), "COMMAND [ARGS]..."]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _write_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            # the whole first sentence, wrapped, rather than cut at the terminal's width
            summary = command.short_help or (command.help or "").strip().split("\n\n")[0]
            rows.append((name, " ".join(summary.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _adopt(group: Any) -> None:
    """Give ``group``'s commands this layout (Typer builds them before their group)."""
    for command in group.commands.values():
        if type(command) is TyperCommand:
            command.__class__ = PlainCommand  # same fields, other help methods
        elif type(command) is TyperGroup:
            command.__class__ = PlainGroup
            _adopt(command)
