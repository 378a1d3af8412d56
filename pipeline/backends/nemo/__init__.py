"""NeMo backends, the production path on GPUs: frame MarbleNet VAD (`vad.py`), AmberNet language ID
(`lid.py`), FastConformer / Canary ASR (`asr.py`, with `decoding.py` and `words.py`), and Sortformer
or TitaNet + clustering diarization (`diarization.py`). What they share (model loading through
`pipeline.models`, padding, OOM splitting) is in `common.py`; model-free rules on their outputs are
in `pipeline.timeline`.

torch and nemo are imported inside constructors and methods: `import pipeline.backends.nemo` is
cheap, and a job that never uses NeMo never pays its ~20 s import.
"""

from pipeline.backends.nemo.asr import NemoAsr
from pipeline.backends.nemo.diarization import NemoDiarizer
from pipeline.backends.nemo.lid import NemoLid
from pipeline.backends.nemo.vad import NemoVad

__all__ = ["NemoAsr", "NemoDiarizer", "NemoLid", "NemoVad"]
