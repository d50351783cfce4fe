"""An impatient user and a careless mirror: Ctrl-C stops any stage within about a second, in one line, exit 130, with
cache and outputs whole; every request honours the retry and time bounds; an unwritable --out is found before any
download; a file changed before its header is read, or a body longer than announced, is said to be so; default output
names never let one run replace another's results."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_reliability_files import console_script, entry_problems, temp_files

from solarforensics.sources import hub as hub_module

COMPARE = ("compare", "acme/a", "acme/b", "--tensors", "final-norm,attn-k,attn-v", "--permutations", "99",
           "--device", "cpu")


def data_requests(server, file_suffix=".safetensors", method="GET") -> list[dict]:
    return [e for e in server.stats()["log"] if e["path"].split("?")[0].endswith(file_suffix) and e["method"] == method]


# -- Ctrl-C ------------------------------------------------------------------------------------------------------------

def wait_for(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("stage", ["starting", "opening", "fetching"])
def test_ctrl_c_stops_any_stage_within_about_a_second(hub_server, derived_pair_root, tmp_path, stage, capsys):
    # Opening: every answer waits 1.5 s; fetching: tensors trickle at 20 kB/s per answer. Both would take far longer
    # than a second to finish on their own.
    server = hub_server(derived_pair_root, latency_ms=1500 if stage == "opening" else 0,
                        bandwidth=20_000 if stage == "fetching" else None)
    cache, out = tmp_path / "cache", tmp_path / "results" / "run.json"
    env = {**os.environ, "SOLARFORENSICS_CACHE": str(cache), "SOLARFORENSICS_RETRIES": "0"}
    process = subprocess.Popen([*console_script(), *COMPARE, "--out", out], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if stage == "starting":
        time.sleep(0.3)  # still importing
    elif stage == "opening":
        assert wait_for(lambda: server.stats()["log"])  # the first request is waiting for its answer
    else:
        assert wait_for(lambda: len(data_requests(server)) >= 5)  # past the four shard headers: tensors are coming
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # an impatient second Ctrl-C
    _, err = process.communicate(timeout=30)
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\n[reliability] Ctrl-C while {stage}: exit {process.returncode} after {seconds:.2f} s")
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "solarforensics: interrupted" and "Traceback" not in err
    assert seconds < 2.0  # about a second (1 s allowed for stuck workers), on a busy machine
    assert not out.exists() and temp_files(out.parent, cache) == [] and entry_problems(cache) == []


# -- retries and time bounds, on every request ---------------------------------------------------------------------

def test_small_files_obey_the_retry_count(cli, hub_server, derived_pair_root, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    server = hub_server(derived_pair_root)
    server.faults.add("503", "config.json", -1, methods="GET+HEAD")
    code, _, err = cli(*COMPARE, "--out", tmp_path / "r.json")
    assert code == 3 and "answered HTTP 503" in err
    asked = [e for e in server.stats()["log"] if e["path"].endswith("/config.json") and "/acme/a/" in e["path"]]
    assert len(asked) == 1, asked  # no retry, and no extra metadata request before it


@pytest.mark.parametrize("file", ["config.json", "model.safetensors.index.json", "*.safetensors"])
def test_rate_limits_are_waited_out_the_same_way_on_every_request(cli, hub_server, derived_pair_root, tmp_path,
                                                                  monkeypatch, file):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 3)
    server = hub_server(derived_pair_root)
    server.faults.add("429", file, 3, retry_after=0, repo="acme/a", methods="GET+HEAD")
    started = time.monotonic()
    code, _, err = cli(*COMPARE, "--no-cache", "--out", tmp_path / "r.json")
    assert code == 0, err
    assert [e["status"] for e in server.stats()["log"]].count(429) == 3
    assert time.monotonic() - started >= 1.0  # Retry-After + 1 s (parallel requests wait side by side)


def test_a_retry_after_beyond_the_bound_ends_the_run_at_once(cli, hub_server, derived_pair_root, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 5)
    server = hub_server(derived_pair_root)
    server.faults.add("429", "config.json", -1, retry_after=3600)
    started = time.monotonic()
    code, _, err = cli(*COMPARE, "--out", tmp_path / "r.json")
    assert code == 3 and "asks to wait 3600 s, longer than the 120 s a run waits" in err
    assert time.monotonic() - started < 30


# -- limits on what a run is asked ---------------------------------------------------------------------------------

def test_an_unwritable_out_is_found_before_anything_is_read(cli, hub_server, derived_pair_root, tmp_path):
    server = hub_server(derived_pair_root)
    (tmp_path / "a-file").write_text("not a folder")
    for target in (tmp_path / "a-file" / "r.json", tmp_path):
        code, out, err = cli(*COMPARE, "--out", target)
        assert code == 2 and out == "" and err.startswith(f"solarforensics: error: cannot write {target}")
    assert server.stats()["log"] == []  # not even the model info was asked


@pytest.mark.parametrize("argv, message", [
    (("--permutations", "-1"), "--permutations"),
    (("--permutations", str(10**9)), "--permutations"),
    (("--workers", "0"), "--workers"),
    (("--workers", "100000"), "--workers"),
    (("--max-gap", "-5"), "--max-gap"),
    (("--max-gap", str(1 << 40)), "--max-gap"),
])
def test_tuning_flags_are_bounded(cli, argv, message):
    code, _, err = cli("compare", "acme/a", "acme/b", *argv)
    assert code == 2 and message in err


def test_large_permutations_come_with_an_estimate(cli, tmp_path, derived_pair_root):
    a, b = derived_pair_root / "acme" / "a", derived_pair_root / "acme" / "b"
    code, _, err = cli("compare", a, b, "--tensors", "final-norm", "--permutations", "20000", "--out",
                       tmp_path / "r.json")
    assert code == 0 and "--permutations 20,000: the nulls take about 20 times as long" in err


# -- a careless mirror -----------------------------------------------------------------------------------------------

def test_a_file_changed_before_its_header_is_read_is_said_to_have_changed(cli, hub_server, derived_pair_root,
                                                                         tmp_path):
    server = hub_server(derived_pair_root)
    server.faults.add("change", "model-00001-of-00002.safetensors", repo="acme/a")
    code, _, err = cli(*COMPARE, "--no-cache", "--out", tmp_path / "r.json")
    assert code == 3 and "changed during the run" in err and "header" not in err


def test_a_body_longer_than_announced_is_cut_off(cli, hub_server, derived_pair_root, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    server = hub_server(derived_pair_root)
    server.faults.add("oversize", "config.json", -1, extra=64 << 20, repo="acme/a")
    code, _, err = cli(*COMPARE, "--out", tmp_path / "r.json")
    assert code == 3 and "sent more than the" in err and "stopped reading" in err
    served = [e for e in data_requests(server, "config.json") if "/acme/a/" in e["path"]]
    assert served and all(e["status"] == 200 for e in served)


# -- default output names --------------------------------------------------------------------------------------------

def test_default_names_stay_distinct_and_never_replace_another_run(cli, tmp_path, monkeypatch, derived_pair_root):
    deep = tmp_path / ("checkpoints-of-a-long-training-run-" * 3)
    for step in (1000, 2000):
        target = deep / f"global_step_{step}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(derived_pair_root / "acme" / ("a" if step == 1000 else "b"), target)
    monkeypatch.chdir(tmp_path)
    written = []
    for step in (1000, 2000):
        code, out, err = cli("compare", deep / f"global_step_{step}", derived_pair_root / "acme" / "a", "--tensors",
                             "final-norm", "--permutations", "0")
        assert code == 0, err
        written.append(Path(out.strip().splitlines()[-1].removeprefix("results: ")))
    assert written[0] != written[1] and all(p.exists() for p in written)
    assert [json.loads(p.read_text())["models"]["a"] for p in written] == [str(deep / "global_step_1000"),
                                                                            str(deep / "global_step_2000")]
    # A file of the default name that holds another run's results is left alone: the run takes the next free name.
    a, b = derived_pair_root / "acme" / "a", derived_pair_root / "acme" / "b"
    first = cli("compare", a, b, "--tensors", "final-norm", "--permutations", "0")[1].strip().splitlines()[-1]
    path = Path(first.removeprefix("results: "))
    doc = json.loads(path.read_text())
    doc["models"]["a"] = "someone/else"
    path.write_text(json.dumps(doc))
    again = cli("compare", a, b, "--tensors", "final-norm", "--permutations", "0")[1].strip().splitlines()[-1]
    assert again == f"results: {path.with_name(path.stem + '-2.json')}"
    assert json.loads(path.read_text())["models"]["a"] == "someone/else"
