"""`scriptorium` command line: the only place that reads argv and the environment.

    scriptorium run CONFIG [dotted.key=value ...] [--yes] [--dry-run]   transcribe
    scriptorium plan CONFIG [dotted.key=value ...]   what a run would do and why (new, input or settings changed)
    scriptorium pseudo-label CONFIG [dotted.key=value ...] [--to DEST] [--yes]   run, then export NeMo + Lhotse labels
    scriptorium status OUTPUT_URI [--config CONFIG] committed / failed counts and what a rerun would do
    scriptorium export OUTPUT_URI --format nemo|lhotse|lhotse-shar|srt|vtt|txt|json --to DEST [--overwrite]
    scriptorium filter OUTPUT_URI [RULES.yaml] [quality.key=value ...]   re-judge segments, no model
    scriptorium eval REFERENCES OUTPUT_URI [--json FILE]   WER/CER, yield, LID accuracy, DER
    scriptorium maintain OUTPUT_URI [--retention-hours H]   compact, checkpoint, vacuum the tables
    scriptorium index OUTPUT_URI [--rebuild]   build or update the output's search index
    scriptorium browse OUTPUT_URI [--host H] [--port P]   search and listen in a web page (index updated first)
    scriptorium maintain OUTPUT_URI --verify   read every data file whole, check the logs; exit 2 if damaged

Exit codes of `run`: 0 all done (or nothing to do); 3 done, but some files failed (see the
`recordings` rows with status=error); 1 nothing could be processed, or the run crashed; 2 the config,
the input or the cluster is wrong (one line on stderr says what), before any audio is touched, or the
run would redo more than output.confirm_redo_share of the output and was not confirmed (--yes).
`pseudo-label` exits as its run did (3: labels written for the files that succeeded).
Every command's exit code is its result: once it is final, the process ends without the interpreter's
teardown (`exit_now`), where native thread pools could still abort it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
import warnings

from pipeline import __version__
from pipeline.browse import serve
from pipeline.config import OutputConfig, StorageOptions, load_config
from pipeline.errors import QuietStorageFull, StorageFullError, UserError
from pipeline.eval import evaluate, table, write_json
from pipeline.export import export
from pipeline.filter import load_rules, refilter, summary
from pipeline.ledger import Ledger, maintain
from pipeline.ledger.integrity import check as check_integrity
from pipeline.plan import ask_on_terminal, make_plan
from pipeline.progress import NativeLogFilter
from pipeline.pseudo_label import pseudo_label
from pipeline.redact import install as install_redaction
from pipeline.report import EXIT_FAILED, EXIT_USAGE
from pipeline.search import sync
from pipeline.status import status
from pipeline.text import SafeLogFilter, safe, safe_lines


def main(argv: list[str] | None = None) -> int:
    """The `scriptorium` command. Called without `argv` (the console script, `python -m pipeline.cli`)
    it ends the process with the command's exit code (`exit_now`); with `argv` (tests, a Python caller)
    it returns the code."""
    code = _main(argv)
    if argv is None:
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End the process with `code`, skipping only the interpreter's teardown.

    Why: reading a Delta table with deltalake + pyarrow leaves Arrow's IO thread pool closing files
    through deltalake's Python filesystem handler. A worker that asks for the GIL while Python
    finalizes is ended by CPython with pthread_exit, whose forced unwind meets a C++ noexcept frame of
    Arrow's worker: std::terminate, "terminate called without an active exception", SIGABRT, exit 134,
    after the right answer was printed (gdb: the aborting thread is an exiting Arrow ThreadPool worker;
    3 in 60 plain reads of a 121-file table, 2 in 60 `status` runs before this; bench/exit_codes.py). What Python's own exit
    does that we need is done first, in its order: non-daemon threads joined, atexit handlers run
    (Ray's shutdown of a local cluster, logging's flush), stdout and stderr flushed. Then `os._exit`:
    no module teardown, no C++ static destructors, nothing left that could change the code."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the handlers Python's exit would run, in the same (reverse) order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): what could be written was
            pass
    os._exit(code)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scriptorium", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"scriptorium {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (implies -v)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="transcribe the input described by CONFIG")
    p_run.add_argument("config", help="YAML file, e.g. conf/local.yaml")
    p_run.add_argument("--yes", action="store_true", help="redo a large share of the output without asking")
    p_run.add_argument("--dry-run", action="store_true", help="say what the run would do (as `plan`), do nothing")
    p_plan = sub.add_parser("plan", help="what a run of CONFIG would do, and why; nothing is written")
    p_plan.add_argument("config", help="YAML file, e.g. conf/local.yaml")
    p_pl = sub.add_parser(
        "pseudo-label",
        help="run CONFIG, then export the accepted segments as NeMo manifest + Lhotse cuts (rerunnable)",
        description="Run CONFIG, then write the accepted segments of the whole output to DEST/nemo/manifest.jsonl "
        "and DEST/lhotse/cuts.jsonl.gz, replacing an earlier export. A rerun refreshes the labels; when some "
        "files fail the others are still labelled and the exit code is 3.",
    )
    p_pl.add_argument("config", help="YAML file, e.g. conf/local.yaml")
    p_pl.add_argument("--to", dest="dest", help="where the labels go (default OUTPUT/export)")
    p_pl.add_argument("--yes", action="store_true", help="redo a large share of the output without asking")
    p_status = sub.add_parser("status", help="what is committed under an output")
    p_status.add_argument("output", help="output URI")
    p_status.add_argument("--config", help="job config, to say what a rerun would do")
    p_export = sub.add_parser("export", help="committed transcripts -> NeMo manifest, Lhotse cuts, SRT/VTT")
    p_export.add_argument("output", help="output URI of a run")
    p_export.add_argument(
        "--format", required=True, choices=["nemo", "lhotse", "lhotse-shar", "srt", "vtt", "txt", "json"]
    )
    p_export.add_argument("--overwrite", action="store_true", help="write into a non-empty destination")
    p_export.add_argument("--with-audio", action="store_true", help="nemo: cut each segment to a 16 kHz WAV")
    p_export.add_argument("--split-by-language", action="store_true", help="nemo: one manifest per language")
    p_export.add_argument("--drop-rejected", action="store_true", help="srt/vtt/txt/json: leave rejected out")
    p_export.add_argument(
        "--rejected-marker",
        default="[?]",
        help='srt: text before a rejected segment\'s cues (default "[?]"; "" for none)',
    )
    p_export.add_argument("--to", required=True, help="destination folder (any fsspec URI)")
    p_export.add_argument("--all", action="store_true", help="include segments the quality stage rejected")
    p_export.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT and DEST")
    p_filter = sub.add_parser("filter", help="re-judge every segment from its stored signals (no model)")
    p_filter.add_argument("output", help="output URI of a run")
    p_filter.add_argument("rules", nargs="?", help="YAML with a quality: section (or its keys)")
    p_filter.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT")
    p_eval = sub.add_parser("eval", help="WER/CER, yield, language ID and DER against references")
    p_eval.add_argument("references", help="NeMo-style manifest: audio_filepath, text, lang, rttm_filepath")
    p_eval.add_argument("output", help="output URI of a run")
    p_eval.add_argument("--json", dest="json_path", help="write the numbers here (default OUTPUT/eval.json)")
    p_eval.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT")
    p_maintain = sub.add_parser("maintain", help="compact, checkpoint and vacuum an output's Delta tables")
    p_maintain.add_argument("output", help="output URI of a run")
    p_maintain.add_argument(
        "--retention-hours",
        type=float,
        default=168.0,
        help="vacuum files no table version of the last H hours references (default 7 days)",
    )
    p_maintain.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT")
    p_index = sub.add_parser("index", help="build or update an output's search index (pipeline/search.py)")
    p_index.add_argument("output", help="output URI of a run")
    p_index.add_argument("--rebuild", action="store_true", help="drop the index and build it anew")
    p_index.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT")
    p_browse = sub.add_parser("browse", help="search an output's transcripts and listen, in a local web page")
    p_browse.add_argument("output", help="output URI of a run")
    p_browse.add_argument("--host", default="127.0.0.1", help="address to bind (off loopback a token is required)")
    p_browse.add_argument("--port", type=int, default=8765)
    p_browse.add_argument("--token", help="the token to require (default: a fresh one when off loopback)")
    p_browse.add_argument("--endpoint-url", help="S3-compatible endpoint for OUTPUT and its inputs")
    p_maintain.add_argument(
        "--verify", action="store_true", help="only read every data file whole and check the logs (exit 2: damaged)"
    )
    for p in (p_run, p_status, p_plan, p_pl):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # `dotted.key=value` overrides may stand anywhere among the options (`status OUT --config C k=v`
    # and `status OUT k=v --config C` both work), so they are collected from what argparse leaves.
    args, rest = parser.parse_known_args(argv)
    args.overrides = [r for r in rest if "=" in r and not r.startswith("-")]
    unknown = [r for r in rest if r not in args.overrides]
    if args.command == "filter" and args.rules and "=" in args.rules:  # `filter OUT quality.k=v`: no YAML
        args.overrides.insert(0, args.rules)
        args.rules = None
    if unknown or (args.overrides and args.command in ("export", "eval")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    # Our own loggers speak at INFO; libraries (botocore, s3fs, NeMo, ...) only when something is wrong.
    verbose = args.verbose or args.debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:  # every log line: credentials redacted, controls escaped
        handler.addFilter(SafeLogFilter())
        if not verbose:  # a full disk is said once, by the last line (StorageFullError), not by each layer
            handler.addFilter(QuietStorageFull())
    install_redaction()  # ... their tracebacks too, and every byte of stdout/stderr (pipeline/redact.py)
    for name in ("pipeline", "scriptorium"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # Ray's own advice on its operators ("... only received 1 input(s)"): -v shows it
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    args.quiet_native = not verbose  # Ray's C++ log lines stay in its session log (pipeline/progress.py)
    # Ray and its workers: keep auth tokens and temp files out of the user's home unless told otherwise.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if args.command == "run" and args.dry_run:
            return _plan(args.config, args.overrides)
        if args.command == "run":
            return _run(args.config, args.overrides, args.yes, quiet_native=args.quiet_native)
        if args.command == "plan":
            return _plan(args.config, args.overrides)
        if args.command == "pseudo-label":
            return _pseudo_label(args)
        if args.command == "export":
            return _export(args)
        if args.command == "filter":
            return _filter(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "maintain":
            return _maintain(args)
        if args.command == "index":
            return _index(args)
        if args.command == "browse":
            return _browse(args)
        return _status(args.output, args.config, args.overrides)
    except UserError as exc:  # the config, input, output, models or cluster are wrong: one line each
        if args.debug:
            raise
        print(f"scriptorium: {safe_lines(exc)}".replace("\n", "\nscriptorium: "), file=sys.stderr)
        return EXIT_USAGE
    except StorageFullError as exc:  # a disk or store is full: what was kept and what to do, one line
        if args.debug:
            raise
        print(f"scriptorium: {safe(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - one line for the user; --debug shows the traceback
        if args.debug:
            raise
        logging.getLogger("scriptorium").debug("failed", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[-1][:300]
        print(
            f"scriptorium: {args.command} failed: {type(exc).__name__}: {safe(first)} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _run(config: str, overrides: list[str], yes: bool = False, quiet_native: bool = True) -> int:
    cfg = load_config(config, overrides)
    from pipeline.runner import run  # heavy: the runner imports Ray; only `run` needs it

    quiet = NativeLogFilter.install() if quiet_native else None
    try:
        report = run(cfg, confirm=None if yes else ask_on_terminal)
    finally:
        if quiet is not None:
            quiet.close()
    print(report.summary())
    return report.exit_code


def _plan(config: str, overrides: list[str]) -> int:
    print(make_plan(load_config(config, overrides), config).text())
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    res = pseudo_label(load_config(args.config, args.overrides), args.dest, None if args.yes else ask_on_terminal)
    print(res.report.summary())
    for line in res.lines:
        print(line)
    return res.exit_code


def _status(output: str, config: str | None, overrides: list[str]) -> int:
    print(status(output, config, overrides))
    return 0


def _export(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    for path in export(
        out,
        args.format,
        args.to,
        accepted_only=not args.all,
        overwrite=args.overwrite,
        with_audio=args.with_audio,
        split_by_language=args.split_by_language,
        drop_rejected=args.drop_rejected,
        rejected_marker=args.rejected_marker,
    ):
        print(safe(path))
    return 0


def _filter(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    rules = load_rules(args.rules, args.overrides)
    print(summary(refilter(out, rules), rules))
    return 0


def _maintain(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    if args.verify:  # read-only: every file read whole (`run` and `status` read footers only)
        return _verify(out)
    done = maintain(out, retention_hours=args.retention_hours)
    print(json.dumps(done, indent=2, default=str))
    return 0


def _index(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    print(safe(sync(out, rebuild=args.rebuild).line()))
    return 0


def _browse(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    print(safe(sync(out).line()), flush=True)
    serve(out, host=args.host, port=args.port, token=args.token)
    return 0


def _verify(out: OutputConfig) -> int:
    checks = check_integrity(Ledger(out), full=True)
    problems = [line for c in checks for line in c.lines()]
    for line in problems:
        print(f"scriptorium: output {safe(out.uri)}: {line}", file=sys.stderr)
    if not problems:
        print(f"output {safe(out.uri)}: " + ", ".join(f"{c.table} version {c.version} whole" for c in checks))
    return EXIT_USAGE if any(c.damaged for c in checks) else 0


def _eval(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    res = evaluate(args.references, out)
    print(table(res))
    print(write_json(res, out, args.json_path))
    return 0


if __name__ == "__main__":
    main()
