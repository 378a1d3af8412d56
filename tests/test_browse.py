"""`scriptorium browse`: the API and the audio it serves (in-process, over HTTP), what it refuses, the
exports of a selection, and the user's path in a real browser (headless Chromium driven by Selenium)."""

from __future__ import annotations

import csv as csvlib
import gzip
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline.browse import byte_range, make_app
from pipeline.config import OutputConfig, StorageOptions
from pipeline.execution.sink import write_table
from pipeline.ledger import read_output
from pipeline.records import recording_id_for
from pipeline.search import connect, count, index_path, sync
from tests.helpers import CORPUS, REPO
from tests.helpers.faults import free_port
from tests.test_search import RUN, transcribed

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> hello & goodbye'


@pytest.fixture()
def archive(tmp_path) -> tuple[OutputConfig, Path, Path]:
    """(output, a committed recording's input, an input beside it that is not in the output)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    clip = audio / "fleurs-de-000.ogg"
    shutil.copy(CORPUS / "multilingual/fleurs-de-000.ogg", clip)
    other = audio / "secret.wav"
    shutil.copy(CORPUS / "speech/speechbrain_spk1_snt1.wav", other)
    cfg = OutputConfig(uri=str(tmp_path / "out"))
    segs = [
        {"text": "Für die besten Aussichten auf Hong Kong", "start": 4.1, "end": 7.0, "language": "de"},
        {"text": XSS, "start": 8.0, "end": 9.0, "language": "de"},
    ]
    write_table(cfg, transcribed({str(clip): segs}, language="de"), RUN, "fp1")
    sync(cfg)
    return cfg, clip, other


def client(cfg: OutputConfig, **kw) -> TestClient:
    return TestClient(make_app(cfg, **kw), base_url="http://127.0.0.1:8765")


def test_search_api_and_audio_with_ranges(archive):
    cfg, clip, _ = archive
    c = client(cfg)
    hits = c.get("/api/search", params={"q": "aussicht*", "language": "de"}).json()["hits"]
    assert [h["uri"] for h in hits] == [str(clip)]
    assert "\x02Aussichten\x03" in hits[0]["snippet"]
    rid = hits[0]["recording_id"]
    assert c.get("/api/search", params={"min_confidence": "2"}).status_code == 400
    assert c.get("/api/facets").json()["languages"] == ["de"]
    rec = c.get(f"/api/recording/{rid}").json()
    assert rec["segments"][1]["text"] == XSS

    data = clip.read_bytes()
    whole = c.get(f"/audio/{rid}")
    assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, data, "audio/ogg")
    assert whole.headers["accept-ranges"] == "bytes"
    part = c.get(f"/audio/{rid}", headers={"Range": "bytes=1000-1999"})
    assert (part.status_code, part.content) == (206, data[1000:2000])
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = c.get(f"/audio/{rid}", headers={"Range": "bytes=-100"})
    assert tail.content == data[-100:]
    opened = c.get(f"/audio/{rid}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert opened.content == data[-10:]
    assert c.get(f"/audio/{rid}", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    with pytest.raises(ValueError):
        byte_range("bytes=5-2", 10)
    with pytest.raises(ValueError):
        byte_range("items=0-1", 10)


def test_serves_only_the_outputs_recordings(archive):
    """Nothing but a committed recording's input is ever read: traversal, other files beside it, ids
    that are not in the output, other hosts."""
    cfg, clip, other = archive
    c = client(cfg)
    secret = other.read_bytes()
    attempts = [
        f"/audio/{recording_id_for(str(other))}",  # a real file beside the input, not in the output
        "/audio/..%2F..%2F..%2Fetc%2Fpasswd",
        "/audio/%2Fetc%2Fpasswd",
        "/audio/../../../etc/passwd",
        f"/audio/{recording_id_for(str(clip)).upper()}",
        f"/audio/{recording_id_for(str(clip))}%2F..%2Fsecret.wav",
        "/static/..%2F..%2Fapp.py",
        "/static/../../../../etc/passwd",
        "/api/recording/..%2F..%2Fetc%2Fpasswd",
        f"/api/recording/{recording_id_for(str(other))}",
        f"/audio/{'0' * 16}",
    ]
    for url in attempts:
        r = c.get(url)
        assert r.status_code in (400, 404), (url, r.status_code)
        assert secret[:2000] not in r.content and b"root:" not in r.content
    # a request addressed to another host name (DNS rebinding) is refused on loopback
    assert c.get("/", headers={"host": "evil.example"}).status_code == 400


def test_off_loopback_every_request_needs_the_token(archive):
    cfg, clip, _ = archive
    c = TestClient(make_app(cfg, host="0.0.0.0", token="s3cr3t-token"), base_url="http://192.0.2.1:8765")
    rid = recording_id_for(str(clip))
    for url in ("/", "/api/search?q=hong", f"/audio/{rid}", "/static/app.js"):
        assert c.get(url).status_code == 403, url
    assert c.get("/?token=wrong").status_code == 403
    assert c.get("/api/search", headers={"Authorization": "Bearer s3cr3t-token"}).status_code == 200
    first = c.get("/?token=s3cr3t-token")
    assert first.status_code == 200 and "httponly" in first.headers["set-cookie"].lower()
    assert c.get(f"/audio/{rid}").status_code == 200  # the cookie the first answer set


def test_exports_of_a_selection(archive):
    cfg, clip, _ = archive
    c = client(cfg)
    rid = recording_id_for(str(clip))
    sel = {"segments": [[rid, 1], [rid, 0], ["f" * 16, 0]]}  # in the order picked; an unknown one left out
    csv = c.post("/api/export", json={"format": "csv", **sel})
    assert csv.status_code == 200 and "segments.csv" in csv.headers["content-disposition"]
    lines = csv.text.splitlines()
    assert lines[0].startswith("uri,recording_id,segment_index,start,end,speaker,language,confidence,accepted,text")
    assert len(lines) == 3 and lines[1].startswith(f"{clip},{rid},1,8.0,9.0,")
    nemo = [json.loads(x) for x in c.post("/api/export", json={"format": "nemo", **sel}).text.splitlines()]
    assert [(x["audio_filepath"], x["offset"], x["duration"], x["text"]) for x in nemo] == [
        (str(clip), 8.0, 1.0, XSS),
        (str(clip), 4.1, 2.9, "Für die besten Aussichten auf Hong Kong"),
    ]
    cuts = [
        json.loads(x)
        for x in gzip.decompress(c.post("/api/export", json={"format": "lhotse", **sel}).content).splitlines()
    ]
    assert [(x["id"], x["start"], x["duration"]) for x in cuts] == [
        (f"{rid}-00001", 8.0, 1.0),
        (f"{rid}-00000", 4.1, 2.9),
    ]
    assert cuts[1]["supervisions"][0]["text"] == "Für die besten Aussichten auf Hong Kong"
    assert c.post("/api/export", json={"format": "docx", **sel}).status_code == 400
    assert c.post("/api/export", json={"format": "csv", "segments": []}).status_code == 400
    assert c.post("/api/export", content=b"not json").status_code == 400


def test_audio_from_s3_is_streamed_by_the_server(s3_endpoint, tmp_path):
    """An input on S3: the browser asks the server, the server reads the store (its credentials)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="browse-audio")
    data = (CORPUS / "multilingual/fleurs-fr-000.ogg").read_bytes()
    s3.put_object(Bucket="browse-audio", Key="fr/clip.ogg", Body=data)
    uri = "s3://browse-audio/fr/clip.ogg"
    cfg = OutputConfig(uri=str(tmp_path / "out"), storage=StorageOptions(endpoint_url=s3_endpoint))
    rows = transcribed({uri: [{"text": "L'accident a eu lieu en terrain montagneux"}]}, language="fr")
    write_table(cfg, rows, RUN, "fp1")
    sync(cfg)
    c = client(cfg)
    rid = recording_id_for(uri)
    assert c.get("/api/search", params={"q": "montagneux"}).json()["hits"][0]["uri"] == uri
    r = c.get(f"/audio/{rid}", headers={"Range": "bytes=200-4199"})
    assert (r.status_code, r.content) == (206, data[200:4200])


# -- the user's path, in a real browser ---------------------------------------------------------------


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromium-driver are needed (infra/install-system-deps.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio", "--window-size=1200,700"):
        opts.add_argument(arg)
    opts.add_argument("--autoplay-policy=no-user-gesture-required")
    return webdriver.Chrome(options=opts, service=Service(driver))


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"browse exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("browse did not start listening")


def test_search_click_listen_in_a_real_browser(shared_output, tmp_path):
    """Start `browse` on a run of the corpus, search a phrase of one FLEURS clip, see it first, click it:
    the audio plays from the segment's start and the highlighted word advances. A transcript that looks
    like HTML stays text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    audio, shared = shared_output
    # the run built the index beside its output, with every committed segment
    cfg_shared = OutputConfig(uri=str(shared))
    assert count(connect(index_path(cfg_shared))) == read_output(cfg_shared).num_rows > 0

    out = tmp_path / "out"
    shutil.copytree(shared, out)
    cfg = OutputConfig(uri=str(out))
    hostile = tmp_path / "hostile.wav"
    shutil.copy(CORPUS / "speech/speechbrain_spk1_snt1.wav", hostile)
    write_table(cfg, transcribed({str(hostile): [{"text": XSS}]}), RUN, "fp-other")  # browse's sync adds it

    seg = next(
        s
        for s in read_output(cfg).to_pylist()
        if s["uri"].endswith("fleurs-de-000.ogg") and "Hong Kong" in (s["text"] or "")
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "browse", str(out), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    driver = None
    try:
        _wait_port(port, proc)
        driver = _chrome()
        wait = WebDriverWait(driver, 20)
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "q").send_keys('"Aussichten auf Hong Kong"\n')
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
        first = driver.find_elements(By.CSS_SELECTOR, "#results li")[0]
        assert "fleurs-de-000.ogg" in first.text and "0:04" in first.text
        assert [m.text for m in first.find_elements(By.TAG_NAME, "mark")] == ["Aussichten auf Hong Kong"]

        first.click()
        js_audio = "const a = document.getElementById('audio'); return [a.currentTime, a.paused, a.readyState];"
        wait.until(lambda d: d.execute_script(js_audio)[1] is False and d.execute_script(js_audio)[0] > 0)
        t0, _, _ = driver.execute_script(js_audio)
        assert seg["start"] - 0.05 <= t0 < seg["start"] + 1.0, (t0, seg["start"])

        js_word = (
            "const w = [...document.querySelectorAll('#transcript .word')];"
            "const i = w.findIndex(x => x.classList.contains('current')); return [i, i < 0 ? null : w[i].textContent];"
        )
        wait.until(lambda d: d.execute_script(js_word)[0] >= 0)
        i0, word0 = driver.execute_script(js_word)
        assert word0 in seg["text"]
        wait.until(lambda d: d.execute_script(js_word)[0] > i0)  # the highlight follows the audio
        t1, paused, _ = driver.execute_script(js_audio)
        assert t1 > t0 and not paused

        # the XSS-looking transcript: found, shown as text, nothing of it run or made an element
        search = driver.find_element(By.ID, "q")
        search.clear()
        search.send_keys("onerror\n")
        wait.until(lambda d: "hello" in d.find_element(By.ID, "results").text)
        assert XSS.replace('"', "") in driver.find_element(By.ID, "results").text.replace('"', "")
        assert driver.find_elements(By.CSS_SELECTOR, "#results img, #results script") == []
        driver.find_elements(By.CSS_SELECTOR, "#results li")[0].click()
        wait.until(lambda d: "hello" in d.find_element(By.ID, "transcript").text)
        assert driver.find_elements(By.CSS_SELECTOR, "#transcript img, #transcript script") == []
        assert driver.execute_script("return window.__pwned === undefined")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=10)


def test_a_csv_export_never_hands_a_spreadsheet_a_formula(tmp_path):
    """Text that a spreadsheet would run (=, +, -, @) comes out as text, with a leading apostrophe."""
    clip = tmp_path / "clip.ogg"
    shutil.copy(CORPUS / "multilingual/fleurs-de-000.ogg", clip)
    cfg = OutputConfig(uri=str(tmp_path / "out"))
    texts = ['=HYPERLINK("http://evil.example","Rechnung")', "+49 30 1234", "@SUM(A1:A9)", "- ja, genau", "Hallo"]
    segs = [{"text": t, "start": float(k), "end": k + 0.9, "language": "de"} for k, t in enumerate(texts)]
    write_table(cfg, transcribed({str(clip): segs}, language="de"), RUN, "fp1")
    rid = recording_id_for(str(clip))
    res = client(cfg).post("/api/export", json={"format": "csv", "segments": [[rid, k] for k in range(len(texts))]})
    got = [row[-1] for row in csvlib.reader(res.text.splitlines()[1:])]
    assert got == ["'" + t for t in texts[:4]] + ["Hallo"], got
