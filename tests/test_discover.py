"""Discovery (pipeline/discover.py): manifests, their lines resolved concurrently or trusted, and a
remote manifest kept to its own protocol and bucket. (A local manifest's containment, through the
decode stage: tests/test_decode_stage.py.)"""

from __future__ import annotations

from tests.helpers import CORPUS


def test_manifest_line_holding_a_u2028_is_one_entry(tmp_path):
    """JSON may carry U+2028 raw inside a string (ensure_ascii=False); it is not a line break."""
    import json
    import shutil

    from pipeline.config import InputConfig
    from pipeline.discover import discover

    name = "odd\u2028name.wav"
    shutil.copy(CORPUS / "speech" / "speechbrain_spk1_snt1.wav", tmp_path / name)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": name, "text": "x"}, ensure_ascii=False) + "\n")
    (found,) = discover(InputConfig(uri=str(tmp_path / "m.jsonl")))
    assert found.uri.endswith(name) and found.size > 0


def test_manifest_lines_resolved_concurrently_or_trusted(tmp_path, monkeypatch):
    """Lines with size and duration are trusted (no request); the rest are resolved in parallel."""
    import json
    import time

    from pipeline import discover as disc
    from pipeline.config import InputConfig

    (tmp_path / "real.wav").write_bytes(b"x" * 1234)
    lines = [
        {"audio_filepath": "real.wav", "text": "hello"},
        {"audio_filepath": "missing.wav"},
        {"audio_filepath": "s3://far/away.wav", "size": 99, "duration": 2.5, "etag": "e1", "text": "t"},
    ]
    lines += [{"audio_filepath": f"slow{i}.wav"} for i in range(40)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    real_resolve = disc._resolve
    calls: list[str] = []

    def slow_resolve(afs, apath, uri, duration, extra):
        calls.append(uri)
        time.sleep(0.1)
        return real_resolve(afs, apath, uri, duration, extra)

    monkeypatch.setattr(disc, "_resolve", slow_resolve)
    t0 = time.time()
    files = {f.uri.rsplit("/", 1)[-1]: f for f in disc.discover(InputConfig(uri=str(tmp_path / "m.jsonl")))}
    assert time.time() - t0 < 2.0, "42 lookups of 0.1 s each must overlap"
    assert len(files) == 43 and len(calls) == 42 and not any("far/away" in c for c in calls)
    assert (files["real.wav"].size, files["real.wav"].extra) == (1234, {"text": "hello"})
    assert files["missing.wav"].size == 0
    far = files["away.wav"]
    assert (far.size, far.etag, far.duration_hint, far.extra) == (99, "e1", 2.5, {"text": "t"})


def test_remote_manifest_keeps_to_its_protocol_and_bucket(s3_endpoint):
    import json

    import s3fs

    from pipeline.config import InputConfig, StorageOptions
    from pipeline.discover import discover

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    for b in ("contain", "other"):
        if not fs.exists(b):
            fs.mkdir(b)
    fs.pipe("contain/m/a.wav", b"RIFF")
    entries = [
        "a.wav",
        "/etc/passwd",
        "file:///etc/passwd",
        "../../../etc/passwd",
        "s3://elsewhere/x.wav",
        "s3://other/y.wav",
        "http://127.0.0.1:9/z.wav",
    ]
    fs.pipe("contain/m/manifest.jsonl", "".join(json.dumps({"audio_filepath": e}) + "\n" for e in entries).encode())
    st = StorageOptions(endpoint_url=s3_endpoint)
    got = {f.uri: f for f in discover(InputConfig(uri="s3://contain/m/manifest.jsonl", storage=st))}
    assert got["s3://contain/m/a.wav"].error is None and got["s3://contain/m/a.wav"].size == 4
    assert "a local path in a s3:// manifest" in got["/etc/passwd"].error
    assert "a local path in a s3:// manifest" in got["file:///etc/passwd"].error
    assert "'..' in an object key" in got["s3://contain/m/../../../etc/passwd"].error
    assert "outside the manifest's bucket 'contain'" in got["s3://elsewhere/x.wav"].error
    assert "outside the manifest's bucket" in got["s3://other/y.wav"].error
    assert "a http:// entry in a s3:// manifest" in got["http://127.0.0.1:9/z.wav"].error
    got = {
        f.uri: f
        for f in discover(InputConfig(uri="s3://contain/m/manifest.jsonl", storage=st, allowed_buckets=["other"]))
    }
    assert got["s3://other/y.wav"].error is None  # allowed: looked up (and missing: decode says so)


def test_listings_stream_page_by_page(s3_endpoint, tmp_path, monkeypatch):
    """An S3 prefix is listed one small page at a time and a manifest is read in small byte ranges
    (lines and UTF-8 characters cut across ranges), into Arrow pages of PAGE entries: the same files,
    in the same order (longest first, then URI), as one page would give; `input.limit` cuts that order."""
    import json

    import s3fs

    from pipeline import discover as disc
    from pipeline.config import InputConfig, StorageOptions

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists("pages"):
        fs.mkdir("pages")
    fs.pipe({f"pages/in/{k}/f{i}.wav": b"x" * (100 + 7 * i) for k in "ab" for i in range(5)})
    fs.pipe("pages/in/skip.txt", b"not audio")
    lines = [
        {"audio_filepath": f"clip-é\u2028{i}.wav", "size": 10, "duration": float(i % 3), "text": f"t{i}é"}
        for i in range(9)
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    st = StorageOptions(endpoint_url=s3_endpoint)

    def both(cfg):
        whole = disc.discover_table(cfg)
        calls: list[dict] = []
        real = fs.call_s3
        monkeypatch.setattr(disc, "PAGE", 2)
        monkeypatch.setattr(disc, "LIST_PAGE_KEYS", 3)
        monkeypatch.setattr(disc, "MANIFEST_RANGE", 5)
        monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", lambda self, *a, **kw: calls.append(kw) or real(*a, **kw))
        paged = disc.discover_table(cfg)
        monkeypatch.undo()
        return whole, paged, calls

    whole, paged, calls = both(InputConfig(uri="s3://pages/in", storage=st))
    assert paged.equals(whole) and whole.num_rows == 10 and len(calls) == 4  # 11 keys, 3 a page
    sizes = whole.column("size").to_pylist()
    assert sizes == sorted(sizes, reverse=True) and whole.column("etag").null_count == 0
    whole, paged, _ = both(InputConfig(uri=str(tmp_path / "m.jsonl")))
    assert paged.equals(whole) and whole.num_rows == 9
    assert [json.loads(x)["text"] for x in whole.column("extra").to_pylist()[:3]] == ["t2é", "t5é", "t8é"]
    assert disc.discover(InputConfig(uri=str(tmp_path / "m.jsonl"), limit=2))[1].uri.endswith("clip-é\u20285.wav")
