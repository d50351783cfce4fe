"""Nothing is lost or half-written: results, reports and cache entries are whole or absent whenever a run is stopped,
runs sharing a cache cannot corrupt it, outputs stay where they were asked to go, and hostile input files (pickles,
huge, binary or malformed tokenizer and licence files) end in one clear error without being loaded."""

import ast
import hashlib
import json
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solarforensics.checkpoints import build_checkpoint
from solarforensics.errors import FormatError, ResultsError
from solarforensics.results.document import path_inside, protected_dirs, read_document
from solarforensics.sources import hub as hub_module
from solarforensics.sources.cache import default_cache_dir
from solarforensics.sources.spec import open_source

SRC = Path(__file__).resolve().parents[1] / "src" / "solarforensics"
SAMPLES = Path(__file__).parent / "sample_results"
# Norm gains, k and v: 9 tensor pairs in several coalesced ranges per shard; --json skips the terminal tables.
COMPARE = ("compare", "acme/a", "acme/b", "--tensors", "final-norm,attn-k,attn-v", "--permutations", "99",
           "--device", "cpu", "--json")
NUMBERS = ("rows", "baselines", "layer_matrices")


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args, interrupt_after=None)`: `main()` run here; with a delay, a real SIGINT reaches it mid-run."""
    from solarforensics.cli.main import main

    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    main_thread = threading.main_thread().ident

    def run(*args, interrupt_after: float | None = None):
        monkeypatch.setattr(sys, "argv", ["solarforensics", *map(str, args)])
        timer = threading.Timer(interrupt_after or 0, signal.pthread_kill, (main_thread, signal.SIGINT))
        try:
            try:
                if interrupt_after is not None:
                    timer.start()
                main()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else 0
            finally:
                timer.cancel()
                if timer.is_alive():
                    timer.join()
        except KeyboardInterrupt:  # the signal came after main() had returned
            timer.join()
            code = 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def numbers(path: Path) -> dict:
    doc = read_document(path)
    return {key: doc[key] for key in NUMBERS}


def differences(got: dict, expected: dict) -> list:
    """(where, got, expected) for every row field, baseline or matrix that differs."""
    found = [(f"rows[{i}].{key}", a.get(key), b.get(key)) for i, (a, b) in enumerate(zip(got["rows"], expected["rows"]))
             for key in a.keys() | b.keys() if a.get(key) != b.get(key)]
    found += [(key, got[key], expected[key]) for key in NUMBERS if key != "rows" and got[key] != expected[key]]
    return found + ([("rows", len(got["rows"]), len(expected["rows"]))] if len(got["rows"]) != len(expected["rows"]) else [])


def entry_problems(cache: Path) -> list[str]:
    """Cache entries (at their final names) that are not whole: every range has its SHA-256, every header its own."""
    problems = []
    for path in (cache / "ranges").rglob("*") if (cache / "ranges").exists() else []:
        if path.is_file() and not path.name.startswith("."):
            blob = path.read_bytes()
            if len(blob) < 32 or hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
                problems.append(str(path))
    for path in (cache / "headers").rglob("*") if (cache / "headers").exists() else []:
        if path.is_file() and not path.name.startswith("."):
            record = json.loads(path.read_text())
            digest = hashlib.sha256(json.dumps(record["payload"], sort_keys=True).encode()).hexdigest()
            problems += [str(path)] if digest != record["sha256"] else []
    return problems


def temp_files(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(".*.tmp")]


# -- interruption ---------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # a signal landing in a finalizer
def test_sigint_at_random_points_leaves_whole_files_and_the_next_run_completes(cli, hub_server, derived_pair_root, tmp_path,
                                                                                monkeypatch, capsys):
    hub_server(derived_pair_root, latency_ms=30)  # the network part of a run becomes long enough to be hit
    out = tmp_path / "results" / "run.json"
    assert cli(*COMPARE, "--out", out, "--no-cache")[0] == 0  # the first run in a process pays for lazy imports
    started = time.perf_counter()
    assert cli(*COMPARE, "--out", out, "--no-cache")[0] == 0
    duration, clean = time.perf_counter() - started, numbers(out)
    rng = random.Random(9)
    outcomes, codes = [], []
    for point in range(4):  # one random point in each quarter of a clean run's duration
        cache = tmp_path / f"cache{point}"
        monkeypatch.setenv("SOLARFORENSICS_CACHE", str(cache))
        out.unlink()
        delay = duration * (point + rng.random()) / 4
        code, _, err = cli(*COMPARE, "--out", out, interrupt_after=delay)
        assert code in (0, 130) and err in ("", "solarforensics: interrupted\n")  # Typer exits 130 silently
        assert not out.exists() or numbers(out) == clean  # absent, or whole and right
        assert temp_files(out.parent, cache) == [] and entry_problems(cache) == []
        kept = len([p for p in (cache / "ranges").rglob("*") if p.is_file()]) if (cache / "ranges").exists() else 0
        assert cli(*COMPARE, "--out", out)[0] == 0 and numbers(out) == clean  # the next run completes from the cache
        codes.append(code)
        outcomes.append(f"{delay:.2f}s: exit {code}, {kept} tensors kept in the cache")
    assert 130 in codes  # at least one signal landed mid-run
    with capsys.disabled():
        print(f"\n[reliability] SIGINT kill points (run of {duration:.2f} s): " + "; ".join(outcomes))


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "solarforensics"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from solarforensics.cli.main import main; main()"]


@pytest.mark.slow
def test_sigkill_and_sigint_of_the_console_script_at_random_points(hub_server, derived_pair_root, tmp_path, capsys):
    import os

    hub_server(derived_pair_root, latency_ms=40)
    out = tmp_path / "results" / "run.json"
    env = {**os.environ, "SOLARFORENSICS_RETRIES": "0"}
    started = time.perf_counter()
    subprocess.run([*console_script(), *COMPARE, "--out", out, "--no-cache"], env=env, check=True,
                   capture_output=True)
    duration, clean = time.perf_counter() - started, numbers(out)
    rng, outcomes = random.Random(3), []
    for point in range(12):
        kind = (signal.SIGKILL, signal.SIGINT)[point % 2]
        cache = tmp_path / f"cache{point}"
        env["SOLARFORENSICS_CACHE"] = str(cache)
        out.unlink(missing_ok=True)
        process = subprocess.Popen([*console_script(), *COMPARE, "--out", out], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.8, duration)  # after the imports: the window where files are written
        time.sleep(delay)
        process.send_signal(kind)
        _, err = process.communicate(timeout=60)
        assert not out.exists() or numbers(out) == clean
        assert entry_problems(cache) == []
        left = temp_files(out.parent, cache)
        assert kind == signal.SIGKILL or left == []  # only a SIGKILL can leave a hidden temp file, never a final one
        assert kind == signal.SIGKILL or process.returncode in (0, 130)  # Ctrl-C: exit 130 (or 0: it was done)
        done = subprocess.run([*console_script(), *COMPARE, "--out", out], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert differences(numbers(out), clean) == [], (kind.name, delay)
        outcomes.append(f"{kind.name} at {delay:.2f}s: exit {process.returncode}, {len(left)} temp files")
    with capsys.disabled():
        print(f"\n[reliability] kill points (run of {duration:.2f} s): " + "; ".join(outcomes))


# -- runs sharing a cache -------------------------------------------------------------------------------------------

CACHE_WORKER = r"""
import hashlib, json, random, sys
from pathlib import Path
from solarforensics.sources.cache import RangeCache
root, seed, ops = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cache, rng = RangeCache(root), random.Random(seed)
counts = {"hits": 0, "misses": 0, "wrong": 0, "puts": 0, "damaged": 0}
for _ in range(ops):
    k = rng.randrange(64)
    key = ("http://hub", "acme/a", "0" * 40, "m.safetensors", "etag", k, k + 1)
    data = hashlib.sha256(b"%d" % k).digest() * (1 + k * 97)
    action = rng.random()
    if action < 0.4:
        cache.put(key, data)
        counts["puts"] += 1
    elif action < 0.45 and seed == 0:  # one worker damages entries in place, as a disk or another tool might
        entries = [p for p in (root / "ranges").rglob("*") if p.is_file() and not p.name.startswith(".")]
        if entries:
            victim = rng.choice(entries)
            try:
                with open(victim, "r+b") as handle:
                    handle.seek(rng.randrange(max(1, victim.stat().st_size)))
                    handle.write(b"\xff")
                counts["damaged"] += 1
            except OSError:
                pass
    else:
        got = cache.get(key, len(data))
        counts["misses" if got is None else "hits" if got == data else "wrong"] += 1
print(json.dumps(counts))
"""


def test_processes_hammering_one_cache_never_read_a_wrong_byte(tmp_path, capsys):
    workers = [subprocess.Popen([sys.executable, "-c", CACHE_WORKER, str(tmp_path / "cache"), str(seed), "1200"],
                                stdout=subprocess.PIPE, text=True) for seed in range(4)]
    results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    total = {key: sum(r[key] for r in results) for key in results[0]}
    assert total["wrong"] == 0 and total["hits"] > 500 and total["damaged"] > 10 and total["misses"] > 10
    assert temp_files(tmp_path) == []
    with capsys.disabled():
        print(f"\n[reliability] 4 processes on one cache: {total}")


def test_two_runs_sharing_a_cache_at_once_give_the_clean_numbers(hub_server, derived_pair_root, tmp_path):
    from solarforensics.comparison.compare import CompareRequest, compare_models
    from solarforensics.models import OpenOptions

    hub_server(derived_pair_root, latency_ms=5)
    request = CompareRequest("acme/a", "acme/b", "final-norm,attn-k,attn-v", permutations=99, device="cpu")
    results = [None, None]

    def run(slot: int) -> None:
        results[slot] = compare_models(request, OpenOptions(cache_dir=tmp_path / "shared"))

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    alone = compare_models(request, OpenOptions(use_cache=False))
    assert results[0]["rows"] == results[1]["rows"] == alone["rows"]
    assert entry_problems(tmp_path / "shared") == [] and temp_files(tmp_path) == []


@pytest.mark.slow
def test_two_console_script_runs_sharing_a_cache_at_once(hub_server, derived_pair_root, tmp_path):
    import os

    hub_server(derived_pair_root, latency_ms=20)
    env = {**os.environ, "SOLARFORENSICS_CACHE": str(tmp_path / "shared")}
    outs = [tmp_path / f"run{i}.json" for i in range(3)]
    runs = [subprocess.Popen([*console_script(), *COMPARE, "--out", out], env=env, stdout=subprocess.DEVNULL)
            for out in outs[:2]]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    subprocess.run([*console_script(), *COMPARE, "--out", outs[2], "--no-cache"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    assert numbers(outs[0]) == numbers(outs[1]) == numbers(outs[2])
    assert entry_problems(tmp_path / "shared") == []


# -- where outputs may go -------------------------------------------------------------------------------------------


def test_protected_dirs_include_the_range_cache_and_the_hf_home(tmp_path):
    assert default_cache_dir().resolve() in protected_dirs()
    assert (tmp_path / "hf_home").resolve() in protected_dirs()  # conftest points HF_HOME here


def test_results_are_never_written_inside_a_cache(cli, hub_server, derived_pair_root, tmp_path):
    hub_server(derived_pair_root)
    target = tmp_path / "sfcache" / "ranges" / "x.json"
    code, out, err = cli(*COMPARE, "--out", target)
    assert (code, out) == (2, "")
    assert err == (f"solarforensics: error: refusing to write {target} inside the cache {tmp_path / 'sfcache'} "
                   "(choose an output path outside the caches (see --out))\n")
    assert not target.exists() and entry_problems(tmp_path / "sfcache") == []  # only the run's own cache entries


@pytest.mark.parametrize("where", ["sfcache", "hf_home", "link-into-cache"])
def test_reports_are_never_written_inside_a_cache(cli, tmp_path, where):
    cache = tmp_path / ("sfcache" if where == "link-into-cache" else where)
    cache.mkdir(exist_ok=True)
    if where == "link-into-cache":
        (tmp_path / "innocent").symlink_to(cache, target_is_directory=True)
    folder = tmp_path / ("innocent" if where == "link-into-cache" else where)
    for fmt in ("md", "html"):
        code, _, err = cli("report", SAMPLES / "compare-layernorm.json", "--format", fmt, "--out", folder / f"r.{fmt}")
        assert code == 2 and err.startswith(f"solarforensics: error: refusing to write {folder}")
        assert f"inside the cache {cache} (" in err
    assert list(cache.rglob("*")) == []


@pytest.mark.parametrize("name", ["../escape.json", "a/b.json", "/etc/passwd", "..", ".", "", "nul\x00.json",
                                  "x" * 300])
def test_generated_names_cannot_leave_their_folder(tmp_path, name):
    with pytest.raises(ResultsError, match="refusing to write"):
        path_inside(tmp_path, name)


def test_a_generated_name_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "step.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ResultsError, match="resolves outside"):
        path_inside(tmp_path / "case", "step.json")
    assert path_inside(tmp_path / "case", "report.md") == tmp_path / "case" / "report.md"


def test_a_hostile_results_file_cannot_steer_report_figures_out_of_their_folder(cli, tmp_path):
    doc = json.loads((SAMPLES / "compare-layernorm.json").read_text())
    escape = "../../../../escaped"
    for row in doc["rows"]:
        row["group"] = escape
    doc["groups"], doc["models"]["a"] = [escape], escape
    (tmp_path / "hostile.json").write_text(json.dumps(doc))
    report = tmp_path / "reports" / "deep" / "r.md"
    code, _, err = cli("report", tmp_path / "hostile.json", "--format", "md", "--out", report)
    assert code == 0, err
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {tmp_path / "hostile.json"}
    assert report in written and len(written) > 1
    assert all(report.parent in p.parents or p == report for p in written)


def test_a_matrix_over_a_glob_with_a_slash_names_its_heatmap_safely(cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save_file({"blk/0.norm": torch.ones(4) * (2 if name == "b" else 1)}, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text('{"model_type": "llama"}')
    code, _, err = cli("matrix", "--models", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--tensors", "blk/*",
                       "--device", "cpu", "--out", tmp_path / "m.json")
    assert code == 0, err
    assert [p.parent for p in tmp_path.glob("**/*.png")] == [tmp_path]


# -- hostile input files --------------------------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates a marker file: proof that a pickle was (or was never) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("layout", ["folder", "file", "hub", "hub with safetensors too"])
def test_pickle_checkpoints_are_never_loaded(cli, hub_server, derived_pair_root, tmp_path, layout):
    marker = tmp_path / "UNPICKLED"
    repo = tmp_path / "hub" / "acme" / "old"
    repo.mkdir(parents=True)
    (repo / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    (repo / "config.json").write_text('{"model_type": "llama"}')
    if layout == "hub with safetensors too":
        for file in (derived_pair_root / "acme" / "a").iterdir():
            (repo / file.name).write_bytes(file.read_bytes())
    server = hub_server(tmp_path / "hub")
    spec = {"folder": repo, "file": repo / "pytorch_model.bin"}.get(layout, "acme/old")
    code, _, err = cli("inspect", spec)
    if layout == "hub with safetensors too":
        assert code == 0, err
    else:
        assert code == 2 and "is a pickle-based checkpoint; solarforensics never unpickles" in err
    assert not marker.exists()
    assert not [e for e in server.stats()["log"] if e["path"].split("?")[0].endswith(".bin")]


DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "torch.load",
                   "numpy.load", "np.load", "marshal.load", "marshal.loads", "shelve.open", "yaml.load",
                   "yaml.unsafe_load", "yaml.full_load", "dill.load", "joblib.load", "os.system", "os.popen",
                   "importlib.import_module", "runpy.run_path", "runpy.run_module"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def imports_our_own(call: ast.Call) -> bool:
    """import_module("solarforensics.…") or with an f-string of that prefix: a module of this package, not a path."""
    first = call.args[0] if call.args else None
    if isinstance(first, ast.JoinedStr) and first.values:
        first = first.values[0]
    return (dotted(call.func) == "importlib.import_module" and isinstance(first, ast.Constant)
            and str(first.value).startswith("solarforensics."))


def test_src_has_no_code_loading_calls_no_pickle_and_no_remote_code():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and dotted(node.func) in DANGEROUS_CALLS and not imports_our_own(node):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {dotted(node.func)}(...)")
            if isinstance(node, ast.Call) and any(k.arg == "shell" for k in node.keywords):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} shell=...")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{path.relative_to(SRC)}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in ("pickle", "marshal", "shelve", "dill", "joblib", "cloudpickle")]
        if "trust_remote_code" in text:
            found.append(f"{path.relative_to(SRC)}: mentions trust_remote_code")
    assert found == []


def make_repo(root: Path, name: str, files: dict[str, bytes | int]) -> Path:
    """A tiny checkpoint folder plus `files` (bytes, or an int for a sparse file of that size)."""
    folder = root / "acme" / name
    build_checkpoint(folder, "llama", seed=0, num_shards=1, tokenizer=False)
    for file, content in files.items():
        if isinstance(content, int):
            with open(folder / file, "wb") as handle:
                handle.truncate(content)
        else:
            (folder / file).write_bytes(content)
    return folder


HOSTILE_TEXT = {
    "huge": (65 << 20, "over the 67,108,864-byte limit"),
    "binary": (b"\xff\xfe\x00\x01", "is not UTF-8 text"),
    "malformed": (b'{"model": {"type": "BPE", "vocab": {"a": 0}', "is not valid JSON"),
    "not a tokenizer": (b'["a", "b"]', "has no 'model' object"),
}


@pytest.mark.parametrize("case", HOSTILE_TEXT)
@pytest.mark.parametrize("where", ["folder", "hub"])
def test_a_hostile_tokenizer_file_is_refused_in_one_line(hub_server, tmp_path, case, where):
    from solarforensics.evidence.tokenizer import read_vocabulary

    content, message = HOSTILE_TEXT[case]
    folder = make_repo(tmp_path / "hub", "tok", {"tokenizer.json": content})
    server = hub_server(tmp_path / "hub")
    source = open_source(str(folder) if where == "folder" else "acme/tok", endpoint=server.url, use_cache=False)
    with pytest.raises(FormatError, match=message) as refused:
        read_vocabulary(source)
    assert "\n" not in refused.value.one_line() and len(refused.value.one_line()) < 300
    assert not [e for e in server.stats()["log"] if "tokenizer.json" in e["path"] and e["method"] == "GET"
                and case == "huge"]  # a file over the limit is not downloaded at all


@pytest.mark.parametrize("content, message", [
    (5 << 20, "over the 1,048,576-byte limit"),
    (b"Apache License\x00\x00", "is binary"),
    (b"\xc0\xaf Apache", "is not UTF-8 text"),
])
@pytest.mark.parametrize("where", ["folder", "hub"])
def test_a_hostile_licence_file_is_refused_in_one_line(hub_server, tmp_path, content, message, where):
    from solarforensics.evidence.license import read_licence

    folder = make_repo(tmp_path / "hub", "lic", {"LICENSE": content})
    server = hub_server(tmp_path / "hub")
    source = open_source(str(folder) if where == "folder" else "acme/lic", endpoint=server.url, use_cache=False)
    with pytest.raises(FormatError, match=message):
        read_licence(source, "LICENSE")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"model_type": ' + "9" * 5000 + "}"], ids=["deep", "huge number"])
def test_a_pathological_json_file_is_a_formaterror(cli, tmp_path, text):
    folder = make_repo(tmp_path, "json", {"config.json": text.encode()})
    code, _, err = cli("inspect", folder)
    assert code == 2 and err.startswith("solarforensics: error: json: config.json is not valid JSON")


TOKENIZER_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats() | st.text(max_size=4)
    | st.sampled_from(["BPE", "WordPiece", "WordLevel", "Unigram", "Metaspace", "ByteLevel", "Sequence"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "type", "vocab", "merges", "added_tokens", "id", "content", "special",
                         "pre_tokenizer", "decoder", "normalizer", "pretokenizers", "byte_fallback",
                         "continuing_subword_prefix", "unk_token"]) | st.text(max_size=3), inner, max_size=5),
    max_leaves=12,
)


@settings(max_examples=200, deadline=2000, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({"model": TOKENIZER_JSON}, optional={"added_tokens": TOKENIZER_JSON,
                                                                  "pre_tokenizer": TOKENIZER_JSON}) | TOKENIZER_JSON)
def test_any_tokenizer_json_structure_parses_or_is_one_formaterror(data):
    from solarforensics.evidence.tokenizer_vocab import parse_tokenizer

    try:
        vocabulary = parse_tokenizer(data, "fuzz/tokenizer.json")
        vocabulary.by_surface()
        vocabulary.merge_surfaces()
    except FormatError as refused:
        assert "\n" not in refused.message and len(refused.one_line()) < 400
