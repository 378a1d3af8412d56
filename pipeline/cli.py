"""`scriptorium` command line: the only place that reads argv and the environment.

    scriptorium run CONFIG [dotted.key=value ...]   transcribe
    scriptorium status OUTPUT_URI [--config CONFIG] committed / failed counts and what a rerun would do
    scriptorium export OUTPUT_URI --format nemo|lhotse|lhotse-shar|srt|vtt|txt|json --to DEST [--overwrite]
    scriptorium filter OUTPUT_URI [RULES.yaml] [quality.key=value ...]   re-judge segments, no model
    scriptorium eval REFERENCES OUTPUT_URI [--json FILE]   WER/CER, yield, LID accuracy, DER
    scriptorium maintain OUTPUT_URI [--retention-hours H]   compact, checkpoint, vacuum the tables

Exit codes of `run`: 0 all done (or nothing to do); 3 done, but some files failed (see the
`recordings` rows with status=error); 1 nothing could be processed, or the run crashed; 2 the config,
the input or the cluster is wrong (one line on stderr says what), before any audio is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pipeline import __version__
from pipeline.config import OutputConfig, StorageOptions, load_config
from pipeline.errors import QuietStorageFull, StorageFullError, UserError
from pipeline.eval import evaluate, table, write_json
from pipeline.export import export
from pipeline.filter import load_rules, refilter, summary
from pipeline.ledger import maintain
from pipeline.report import EXIT_FAILED, EXIT_USAGE
from pipeline.status import status
from pipeline.text import SafeLogFilter, safe, safe_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scriptorium", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"scriptorium {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (implies -v)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="transcribe the input described by CONFIG")
    p_run.add_argument("config", help="YAML file, e.g. conf/local.yaml")
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
    for p in (p_run, p_status):
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
    for name in ("pipeline", "scriptorium"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # Ray and its workers: keep auth tokens and temp files out of the user's home unless told otherwise.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if args.command == "run":
            return _run(args.config, args.overrides)
        if args.command == "export":
            return _export(args)
        if args.command == "filter":
            return _filter(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "maintain":
            return _maintain(args)
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


def _run(config: str, overrides: list[str]) -> int:
    from pipeline.runner import run  # heavy: the runner imports Ray; only `run` needs it

    report = run(load_config(config, overrides))
    print(report.summary())
    return report.exit_code


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
    ):
        print(safe(path))
    return 0


def _filter(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    print(summary(refilter(out, load_rules(args.rules, args.overrides))))
    return 0


def _maintain(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    done = maintain(out, retention_hours=args.retention_hours)
    print(json.dumps(done, indent=2, default=str))
    return 0


def _eval(args: argparse.Namespace) -> int:
    out = OutputConfig(uri=args.output, storage=StorageOptions(endpoint_url=args.endpoint_url))
    res = evaluate(args.references, out)
    print(table(res))
    print(write_json(res, out, args.json_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
