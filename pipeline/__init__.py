"""Scriptorium: batch transcription and pseudo-labelling on Ray Data.

Start reading at `pipeline/runner.py` (the job, top to bottom) and `pipeline/config/` (every knob).
Importing this package is cheap: models, torch and ray are imported only where they are used.

Import layers, bottom to top. A module imports from its own layer and the layers below it, never from
one above; no two modules import each other, however indirectly; a function imports for itself only a
heavy or optional third-party package, with a comment saying why (`# heavy: ...`, `# optional: ...`).
`tests/test_layers.py` reads this table and checks all three.

    layer       modules
    foundation  text errors redact
    config      config
    records     records
    helpers     timeline batching packing audio pieces clustering der progress storage vocabulary
                fingerprint report report_html audio_quality
    io          discover ledger export models search
    backends    backends
    stages      stages
    execution   execution
    commands    runner preflight filter status eval browse plan pseudo_label
    cli         cli

- foundation: the stdlib only, when imported. Text made safe for a terminal or a log; the errors a user
  can act on, the transient-error predicate and the one retry helper. (This package's `__version__` too.)
- config: every knob, as pydantic models; loading YAML, overrides and old keys. Data, nothing it reads.
- records: the data model every stage speaks, and its Arrow schemas.
- helpers: computation without a model or a table: time and speaker turns, bucketing and window
  packing, decoding audio, long recordings' pieces, clustering, DER, progress, fsspec access, the
  vocabulary, the job's fingerprint, the run report.
- io: what the job reads and writes: the input listing, the output's Delta tables and their commit
  protocol, exports of an output, model files fetched and verified, the output's search index.
- backends: one class per model backend (`registry.py` maps a `backend:` name to its class).
- stages: decode, the recording stage, the segment stage and what they call (quality, ITN, punctuation).
- execution: Ray, at the top of each of its modules (importing the package imports Ray); nothing
  below it imports Ray.
- commands: what a `scriptorium` subcommand runs: the job (`runner`, with `preflight`), `filter`,
  `status`, `eval`, `browse` (the archive's web page), `plan` (what a run would redo and why; the
  check before a run redoes much), `pseudo_label` (a run, then its labels exported).
- cli: argv and the environment.
"""

__version__ = "0.1.0"
