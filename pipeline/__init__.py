"""Scriptorium: batch transcription and pseudo-labelling on Ray Data.

Start reading at `pipeline/runner.py` (the job, top to bottom) and `pipeline/config/` (every knob).
Importing this package is cheap: models, torch and ray are imported only where they are used.
"""

__version__ = "0.1.0"
