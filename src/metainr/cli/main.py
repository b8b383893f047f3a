"""Entry point: ``metainr VERB ...``. User-input errors print one line and exit with status 2."""

from __future__ import annotations

import sys

import typer

from metainr.cli import demo, evaluate, fit, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-learned implicit neural representations (Meta-SparseINR, MSCN, GradNCP).")
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("fit")(fit.fit)
app.command("demo")(demo.demo)


def main() -> None:
    from metainr.errors import MetaINRError

    try:
        app()
    except MetaINRError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
