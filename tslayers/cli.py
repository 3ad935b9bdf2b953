"""The ``tslayers`` command: run | pretrain | probe | align | report | inspect.

Each subcommand is a thin shell over one function in the package, imported lazily so that
``tslayers --help`` is instant and a missing optional piece only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module, function, help). The function takes the parsed argparse namespace.
COMMANDS = {
    "run": ("tslayers.study", "run_command",
            "run a whole layerwise study from one config (default: configs/quickstart.yaml)"),
    "depth": ("tslayers.depth", "depth_command", "one study per encoder depth + the depth report"),
    "pretrain": ("tslayers.training", "pretrain_command",
                 "pretrain an encoder with one objective (forecast/reconstruct/contrastive/jepa)"),
    "probe": ("tslayers.commands", "probe_command",
              "probe every layer of an encoder on the configured task families"),
    "align": ("tslayers.align", "align_command",
              "tune an encoder with a temporal alignment head, then re-probe it"),
    "report": ("tslayers.report", "report_command",
               "render a results file (netCDF) as markdown tables and figures"),
    "inspect": ("tslayers.commands", "inspect_command",
                "tap and diagnose the layers of an arbitrary PyTorch model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tslayers",
        description="Where do a time-series transformer's best features live? Probe every layer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="keep library banners and notices (Lightning) in the output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "report":
            p.add_argument("results", help="results file written by probe/align/run (.nc)")
            p.add_argument("--out", default=None, help="output folder (default: beside results)")
        elif name == "inspect":
            p.add_argument("--module", required=True,
                           help="FILE.py:FACTORY or package.module:FACTORY returning an nn.Module "
                                "(the file is executed: its top-level code runs)")
            p.add_argument("--module-arg", action="append", metavar="KEY=VALUE",
                           help="keyword argument for FACTORY (repeatable; YAML scalar values)")
            p.add_argument("--unroll-rnn", action="store_true",
                           help="split stacked nn.GRU/LSTM into per-layer taps rnn.layers.{k}")
            p.add_argument("--taps", default="*", help="module-name glob(s), comma separated")
            p.add_argument("--compare", metavar="FILE:FACTORY",
                           help="a second model probed on the same windows: side-by-side curves "
                                "and cross-model CKA per layer pair (its file is executed too)")
            p.add_argument("--compare-arg", action="append", metavar="KEY=VALUE",
                           help="keyword argument for the --compare FACTORY (repeatable)")
            p.add_argument("--compare-taps", metavar="GLOBS",
                           help="module-name glob(s) of the --compare model (default: --taps)")
            p.add_argument("--data", default="synthetic/mixture",
                           help="dataset name or file (.nc, .npz with x + named target arrays, "
                                ".csv, ...)")
            p.add_argument("--targets", default=None, metavar="NAME[,NAME]",
                           help="dataset variables to probe for: per series (labels or values) "
                                "or per time step (states aligned with the input; read at each "
                                "token's last step)")
            p.add_argument("--context", type=int, default=None,
                           help="window length (default: 256, or what the series allow)")
            p.add_argument("--reduce", default="tokens", choices=["tokens", "mean", "last"],
                           help="keep every step of each tap (per-time tasks apply) or pool it")
            p.add_argument("--input-layout", default="btc", choices=["btc", "bct", "bt"],
                           help="how the model expects a batch: (B,T,C), (B,C,T) or (B,T)")
            p.add_argument("--max-windows", type=int, default=2048)
            p.add_argument("--out", default="runs/inspect", help="output folder")
        else:
            default = "configs/quickstart.yaml" if name == "run" else None
            p.add_argument("config", nargs="?" if default else None, default=default,
                           help=f"YAML config{' (default: ' + default + ')' if default else ''}")
            p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
            p.add_argument("--out", default=None, help="output folder (overrides the config)")
            if name == "pretrain":
                p.add_argument("--overwrite", action="store_true",
                               help="replace a run of another config in the output folder (the "
                                    "old run is moved aside)")
    return parser


def _os_error_message(err: OSError) -> str:
    """One line naming the path and what to do about it."""
    path = err.filename or ""
    reason = err.strerror or str(err)
    hints = {PermissionError: "choose a folder you can write (--out) or fix its permissions",
             NotADirectoryError: "a path component is a file; name a folder (--out)",
             IsADirectoryError: "name a file, not a folder",
             FileExistsError: "a file is in the way; name a folder (--out)"}
    hint = next((h for t, h in hints.items() if isinstance(err, t)),
                "check the path and free disk space")
    where = f" '{path}'" if path else ""
    return f"cannot use{where}: {reason}; {hint}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["TSLAYERS_VERBOSE"] = "1"
    module_name, func_name, _ = COMMANDS[args.command]
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as err:
        print(f"tslayers {args.command}: not available in this build ({err}).", file=sys.stderr)
        return 2
    from tslayers.io import CommandError

    def fail(message: str, code: int = 1) -> int:
        print(f"tslayers {args.command}: error: {' '.join(str(message).split())}",
              file=sys.stderr)
        return code

    try:
        return int(func(args) or 0)
    except CommandError as err:  # locked output, divergence, SIGTERM (exit 143)
        return fail(str(err), err.exit_code)
    except FileNotFoundError as err:
        return fail(str(err) if not err.filename else _os_error_message(err))
    except OSError as err:
        return fail(_os_error_message(err))
    except (ValueError, KeyError) as err:  # ConfigError and DataError are ValueErrors
        return fail(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))

if __name__ == "__main__":
    sys.exit(main())
