"""clipbridge command line: `python cli.py COMMAND` or the `clipbridge` console script.

Each stage owns its commands; this file only gathers them and turns the project's error types into
one clear line on stderr and a non-zero exit. It is the module `clipbridge.cli`; `python cli.py` in a
checkout runs the installed package (`make` or `pip install -e .` installs the checkout itself, editable).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # `python cli.py`: the checkout's folders are not top-level modules
    from pathlib import Path

    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    try:
        import clipbridge  # noqa: F401
    except ImportError:
        sys.exit("error: the clipbridge package is not installed; run `make` (or `pip install -e .`) here first")

import click  # noqa: E402

from clipbridge.bridge.errors import BridgeInputError  # noqa: E402
from clipbridge.errors import ClipBridgeError  # noqa: E402

USER_ERRORS = (ClipBridgeError, BridgeInputError)


#: Commands that run tensors: they flush subnormal floats first (bridge.ops.flush_denormals imports torch,
#: which the quick commands never need).
TENSOR_COMMANDS = ("extract", "fit", "evaluate", "bench", "demo", "predict", "analyze", "export")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipbridge")
def group() -> None:
    """Few-shot CLIP adaptation on an embedding cache: extract once, fit many methods and seeds in seconds."""


def _runs_tensors(argv: list[str]) -> bool:
    """Whether the command line asks for a tensor command (not merely its help)."""
    words = [word for word in argv if not word.startswith("-")]
    return bool(words) and words[0] in TENSOR_COMMANDS and not {"--help", "-h"} & set(argv)


def _add_commands() -> None:
    from clipbridge.cache.commands import fewshot, info
    from clipbridge.evaluate.commands.analyze import analyze
    from clipbridge.evaluate.commands.export import export
    from clipbridge.evaluate.commands.main import bench, demo, evaluate, fit, predict
    from clipbridge.evaluate.commands.methods import methods
    from clipbridge.evaluate.commands.published import published
    from clipbridge.evaluate.commands.recipe import recipe
    from clipbridge.extract.commands import extract

    for command in (extract, fewshot, fit, evaluate, predict, bench, analyze, methods, recipe, published, info,
                    demo, export):
        if not any(param.name == "threads" for param in command.params):
            command.params.append(_threads_option())
        group.add_command(command)


def _set_threads(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """--threads on every command: torch's CPU threads (bridge.threads), set before the command runs tensors."""
    from clipbridge.bridge.threads import apply_threads, parse_threads, resolve_threads

    if ctx.command.name in TENSOR_COMMANDS and not ctx.resilient_parsing:
        apply_threads(value)
    else:
        parse_threads(value)          # a bad value is refused on every command
        resolve_threads(value)


def _threads_option() -> click.Option:
    return click.Option(["--threads"], default=None, expose_value=False, callback=_set_threads, metavar="N|all",
                        help="CPU threads torch uses. [default: $CLIPBRIDGE_THREADS, else the CPUs minus the "
                             "machine's current load, at least 1]")


RESUMABLE_COMMANDS = ("extract", "bench", "demo")


def _interrupted(argv: list[str]) -> str:
    """What Ctrl-C leaves: for the resumable commands, the command that resumes (as the user typed it)."""
    import shlex

    from clipbridge.cache.coverage import invocation

    words = [word for word in argv if not word.startswith("-")]
    if words and words[0] in RESUMABLE_COMMANDS:
        return ("interrupted; what is done is kept, and running the same command again resumes: "
                f"{invocation()} {' '.join(shlex.quote(a) for a in argv)}")
    return "interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors end as `error: <message>` and exit status 1 (130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if _runs_tensors(argv):
        from clipbridge.bridge.ops import flush_denormals

        flush_denormals()  # before torch starts its worker threads (see its docstring)
    _add_commands()
    try:
        group.main(args=argv, prog_name="clipbridge", standalone_mode=False)
    except USER_ERRORS as error:
        click.echo(f"error: {error}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"error: {_interrupted(argv)}", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
