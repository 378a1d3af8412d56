"""What is printed is terminal-safe and holds no secret (pipeline/text.py, issue 18): control, bidi
and line-separator characters shown as escapes, URL credentials redacted, in config errors and in the
run summary alike."""

from __future__ import annotations

import pytest

from tests.helpers import LOCAL_CONF
from tests.helpers.badcorpus import HOSTILE_NAMES


def test_terminal_escapes_and_secrets_never_printed(tmp_path):
    from pipeline.config import ConfigError, load_config
    from pipeline.report import RunReport
    from pipeline.text import printable, redact

    assert (
        printable("\x1b[2J\x1b[H FAKE\r\n\u202egnp\u2028 ü 日本")
        == "\\x1b[2J\\x1b[H FAKE\\r\\n\\u202egnp\\u2028 ü 日本"
    )
    assert printable("\x9b\u2066\u2069\x7f\x00") == "\\x9b\\u2066\\u2069\\x7f\\x00"
    url = "https://admin:hunter2@h.example/k.wav?X-Amz-Signature=abc&X-Amz-Credential=AKIA&token=t0k&v=1"
    red = redact(url)
    assert "hunter2" not in red and "abc" not in red and "AKIA" not in red and "t0k" not in red and "v=1" in red
    with pytest.raises(ConfigError) as err:
        load_config(LOCAL_CONF, ["input.uri=/x", "output.uri=/y", "input.storage.anon=http://admin:hunter2@minio:9000"])
    assert "hunter2" not in str(err.value) and "input.storage.anon" in str(err.value)
    fields = {k: 0 for k, f in RunReport.model_fields.items() if f.is_required()}
    fields.update(
        run_id="r",
        fingerprint="f",
        input_uri="i",
        output_uri="s3://u:pw@b/out\x1b]0;x\x07",
        errors=[{"uri": f"/in/{n}", "error": "decode: bad \x1b[31m"} for n in HOSTILE_NAMES],
        warnings=[],
    )
    text = RunReport(**fields).summary()
    assert not any(c in text for c in "\x1b\r\x07\u202e\u2028") and ":pw@" not in text, text
    assert "\\x1b[2J\\x1b[H FAKE-ALL-GOOD.wav" in text
