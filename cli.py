"""clipbridge command line: `python cli.py COMMAND` or the `clipbridge` console script.

Each stage owns its commands; this file only gathers them and turns the project's error types into
one clear line on stderr and a non-zero exit. Installed, it is `clipbridge.cli`; run as a script from a
checkout, it first makes that checkout the `clipbridge` package (so `python cli.py` always runs the code
beside it, installed or not).
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "clipbridge" not in sys.modules:  # `python cli.py` in a checkout
    import importlib.util
    from pathlib import Path

    _root = Path(__file__).resolve().parent
    _spec = importlib.util.spec_from_file_location("clipbridge", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    sys.modules["clipbridge"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["clipbridge"])

import click  # noqa: E402

from clipbridge.bridge.errors import BridgeInputError  # noqa: E402
from clipbridge.cache.errors import ClipBridgeError  # noqa: E402

USER_ERRORS = (ClipBridgeError, BridgeInputError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipbridge")
def group() -> None:
    """Few-shot CLIP adaptation on an embedding cache: extract once, fit many methods and seeds in seconds."""


def _add_commands() -> None:
    from clipbridge.cache.commands import fewshot, info
    from clipbridge.evaluate.analysis.command import analyze
    from clipbridge.evaluate.commands import bench, demo, evaluate, fit
    from clipbridge.extract.commands import extract

    for command in (extract, fewshot, fit, evaluate, bench, analyze, info, demo):
        group.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors end as `error: <message>` and exit status 1 (130 on Ctrl-C)."""
    from clipbridge.bridge.ops import flush_denormals

    flush_denormals()  # before torch starts its worker threads (see its docstring)
    _add_commands()
    try:
        group.main(args=argv, prog_name="clipbridge", standalone_mode=False)
    except USER_ERRORS as error:
        click.echo(f"error: {error}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("error: interrupted; run the same command again to resume", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
