"""The Hub token never leaves the request headers to the Hub: with HF_TOKEN set to a recognisable value, it appears in
no output line, log record, results JSON, report, figure, cache path or cache file, error message or `--debug`
traceback, and is never sent to the CDN a weight file redirects to."""

import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint
from solarforensics.sources import hub as hub_module

TOKEN = "hf_SfCanaryToken0123456789abcdefXYZ"
WRONG = "hf_SfCanaryWrongToken9876543210zyx"
MARKS = ("SfCanary", "0123456789abcdef", "9876543210zyx")  # any recognisable part of either token


def leaks(text: str | bytes) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [mark for mark in MARKS if mark.encode() in data]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("secret-checkpoints")
    build_checkpoint(root / "a", "llama", seed=0, tokenizer=False)
    derive_checkpoint(root / "a", root / "b", seed=1)
    return root


@pytest.fixture
def server_root(tmp_path, checkpoints):
    """acme/a gated (only TOKEN has access), acme/b public; the server's own settings live outside the scanned tree."""
    root = tmp_path / "server"
    for name in ("a", "b"):
        (root / "acme" / name).mkdir(parents=True)
        for file in (checkpoints / name).iterdir():
            shutil.copy(file, root / "acme" / name / file.name)
    (root / "acme" / "a" / ".hub.json").write_text(json.dumps({"gated": True, "tokens": [TOKEN]}))
    return root


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args)` runs `main()` here and returns (exit code, stdout, stderr, the exception under --debug)."""
    from solarforensics.cli.main import main

    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    runs = []

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["solarforensics", *map(str, args)])
        raised = None
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0
        except Exception as error:  # noqa: BLE001 - only --debug lets an exception out of main()
            code, raised = 1, error
        captured = capsys.readouterr()
        runs.append(captured.out + captured.err)
        return code, captured.out, captured.err, raised

    run.outputs = runs
    return run


def scan_tree(root: Path, skip: Path) -> list[str]:
    """Every path and file content under `root` (but `skip`) that holds a piece of a token."""
    found = []
    for path in root.rglob("*"):
        if skip in path.parents or path == skip:
            continue
        found += [f"path {path}" for _ in leaks(str(path))]
        if path.is_file() and not path.is_symlink():
            found += [f"content of {path}" for _ in leaks(path.read_bytes())]
    return found


def test_a_full_session_with_a_token_leaves_it_nowhere(cli, hub_server, server_root, tmp_path, monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub logs every request as a curl command
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    server = hub_server(server_root, cdn=True)
    out = tmp_path / "out"
    runs = [
        cli("inspect", "acme/a", "--json"),
        cli("compare", "acme/a", "acme/b", "--permutations", "99", "--device", "cpu", "--out", out / "c.json"),
        cli("matrix", "--models", "acme/a,acme/b", "--device", "cpu", "--out", out / "m.json"),
        cli("report", out / "c.json", out / "m.json", "--format", "md", "--out", out / "report.md"),
        cli("report", out / "c.json", "--format", "html", "--out", out / "report.html"),
        cli("compare", "acme/a", "acme/b", "--tensors", "no-such-group", "--out", out / "x.json"),
    ]
    assert [code for code, *_ in runs] == [0, 0, 0, 0, 0, 2]
    assert (out / "report.md").exists() and list(out.glob("report-figures/*.png")) and list(out.glob("m-*.png"))
    assert any("Send: curl" in r.getMessage() for r in caplog.records)  # the debug log did run
    assert not [o for o in cli.outputs if leaks(o)]
    assert not [r.getMessage() for r in caplog.records if leaks(r.getMessage())]
    assert scan_tree(tmp_path, skip=server_root) == []  # results, reports, figures, our cache, the HF cache
    assert not [e["path"] for e in server.stats()["log"] if leaks(e["path"])]


def test_the_token_goes_to_the_hub_but_never_to_the_cdn(cli, hub_server, server_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server = hub_server(server_root, cdn=True)
    code, *_ = cli("compare", "acme/a", "acme/b", "--permutations", "0", "--no-cache", "--out", tmp_path / "c.json")
    assert code == 0
    log = [e for e in server.stats()["log"]
           if e["path"].split("?")[0].endswith(".safetensors") and e["method"] == "GET"]
    hub, cdn = [e for e in log if e["origin"] == "hub"], [e for e in log if e["origin"] == "cdn"]
    assert hub and all(e["auth"] and e["status"] == 302 for e in hub)
    assert cdn and not any(e["auth"] for e in cdn) and {e["status"] for e in cdn} == {206}


@pytest.mark.parametrize("token", [None, WRONG], ids=["no token", "wrong token"])
def test_a_gated_repo_says_it_needs_a_token_or_access_without_echoing_one(cli, hub_server, server_root, monkeypatch,
                                                                           token):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    hub_server(server_root)
    code, out, err, _ = cli("inspect", "acme/a")
    assert code == 2 and out == ""
    assert err == ("solarforensics: error: acme/a is gated and this token has no access (or no token was given) "
                   "(request access on the model page, then set HF_TOKEN or run `hf auth login`)\n")


def test_a_private_repo_with_a_wrong_token_is_not_found_without_echoing_it(cli, hub_server, server_root, monkeypatch):
    (server_root / "acme" / "a" / ".hub.json").write_text(json.dumps({"private": True, "tokens": [TOKEN]}))
    monkeypatch.setenv("HF_TOKEN", WRONG)
    server = hub_server(server_root)
    code, _, err, _ = cli("inspect", "acme/a")
    assert code == 2 and not leaks(err)
    assert err.startswith(f"solarforensics: error: repo acme/a not found at {server.url} (")


@pytest.mark.parametrize("fault", ["gated, wrong token", "503", "ignore-range", "drop"])
def test_debug_tracebacks_hold_no_token(cli, hub_server, server_root, monkeypatch, fault):
    monkeypatch.setenv("HF_TOKEN", WRONG if fault.startswith("gated") else TOKEN)
    server = hub_server(server_root)
    if not fault.startswith("gated"):
        server.faults.add(fault, "*.safetensors", -1)
    code, _, _, raised = cli("--debug", "inspect", "acme/a", "--no-cache")
    assert code == 1 and raised is not None  # --debug lets the exception through, as Python then prints it
    printed = "".join(traceback.format_exception(raised))
    assert not leaks(printed) and not leaks(repr(raised.__dict__))


@pytest.mark.slow
def test_the_console_script_with_debug_logging_prints_no_token(hub_server, server_root, tmp_path):
    server = hub_server(server_root, cdn=True)
    script = Path(sys.executable).parent / "solarforensics"
    fallback = [sys.executable, "-c", "from solarforensics.cli.main import main; main()"]
    command = [str(script)] if script.exists() else fallback
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_DEBUG": "1", "SOLARFORENSICS_RETRIES": "0"}
    outputs = []
    for args in (["compare", "acme/a", "acme/b", "--permutations", "99", "--out", tmp_path / "c.json"],
                 ["--debug", "inspect", "acme/a", "--no-cache"]):
        done = subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)
        outputs.append(done.stdout + done.stderr)
        server.faults.add("503", "*.safetensors", -1)  # the second run fails, with a traceback
    assert "Send: curl" in outputs[0] and "Traceback" in outputs[1]
    assert not [o for o in outputs if leaks(o)]
    assert scan_tree(tmp_path, skip=server_root) == []


PASSWORD = "SfCanaryPassw0rd"


def test_credentials_in_the_endpoint_and_cdn_signatures_appear_nowhere(cli, hub_server, server_root, tmp_path,
                                                                        monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    (server_root / "acme" / "a" / ".hub.json").unlink()  # public: the credentials are the proxy's, not the Hub's
    server = hub_server(server_root, cdn=True)
    secret_url = server.url.replace("http://", f"http://sfuser:{PASSWORD}@")
    secrets = (PASSWORD, server.signature)
    out = tmp_path / "out"
    runs = [cli("compare", "acme/a", "acme/b", "--permutations", "0", "--endpoint", secret_url, "--out", out / "c.json")]
    monkeypatch.setenv("HF_ENDPOINT", secret_url)
    runs.append(cli("inspect", "acme/a", "--json"))
    for kind in ("503", "drop"):  # a failing CDN: the error names the URL it could not read
        server.faults.add(kind, "*.safetensors", -1, origin="cdn")
        runs.append(cli("compare", "acme/a", "acme/b", "--no-cache", "--out", out / "x.json"))
        server.faults.clear()
    assert [code for code, *_ in runs] == [0, 0, 3, 3]
    assert "answered HTTP 503" in runs[2][2] and str(server.url) in runs[2][2]
    doc = json.loads((out / "c.json").read_text())
    assert [s["endpoint"] for s in doc["sources"]] == [server.url, server.url]
    assert any("Send: curl" in r.getMessage() for r in caplog.records)

    def found(text) -> list[str]:
        data = text if isinstance(text, bytes) else str(text).encode()
        return [s for s in secrets if s.encode() in data]

    assert not [o for o in cli.outputs if found(o)]
    assert not [r.getMessage() for r in caplog.records if found(r.getMessage())]
    assert not [p for p in out.rglob("*") if p.is_file() and found(p.read_bytes())]
    hub_requests = [e for e in server.stats()["log"] if e["origin"] == "hub"]
    assert hub_requests and all(e["auth"] for e in hub_requests)  # the credentials were still sent, as a header
