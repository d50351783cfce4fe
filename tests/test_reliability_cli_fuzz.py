"""Exit 70 ("internal error ... report it") is unreachable from user input: seeded random command lines (model specs, flags
and their values) under random tuning variables, endpoints and alias files end in a result or in one clear line, never in
an internal error or a traceback. The default run draws a bounded number of cases; the slow one many more."""

import os
import random
import string
import time
from collections import Counter

import pytest

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint
from solarforensics.sources import hub as hub_module

READS = ("--json", "--endpoint", "--no-cache", "--out")
# Commands that finish quickly, with the flags they take (plus a few they do not).
COMMANDS = {
    "inspect": ("--json", "--endpoint", "--no-cache"),
    "compare": (*READS, "--tensors", "--layers", "--control", "--truncate", "--permutations", "--seed", "--device",
                "--workers", "--max-gap"),
    "matrix": (*READS, "--models", "--tensors", "--device"),
    "arch": READS,
    "tokenizer": (*READS, "--export-map"),
    "license": (*READS, "--against"),
    "provenance": (*READS, "--tests", "--budget-bytes", "--device", "--seed", "--thresholds", "--workers",
                   "--max-gap"),
    "report": ("--format", "--out"),
    "reproduce": ("--out",),
    "models": (), "groups": (), "families": (), "case": (),
}
STRAY = ("--debugx", "--help-me", "-x", "--tensors", "--models")
TUNING = ("SOLARFORENSICS_TIMEOUT", "SOLARFORENSICS_RETRIES", "SOLARFORENSICS_WORKERS", "SOLARFORENSICS_MAX_GAP",
          "SOLARFORENSICS_MAX_SPAN", "SOLARFORENSICS_OVERREAD", "SOLARFORENSICS_MAX_MEMORY")
NASTY = ("", " ", "..", "../..", "/", "-", "--", "@", "a/b@", "a/b@@c", "hf:", "hf:a/b/c/d.gguf", "a..b/c", "a/b--c",
         "a/" + "x" * 200, "\x1b[2J", "é/ü", "a/b@refs/pr/1", "-1", "1e309", "nan", "inf", "0x10", "9" * 30,
         "layernorm,,", "*", "[", "model.layers.[0-", "a b/c d", "~nobody/x", "C:\\x", "\n", "%s%n", "\udcff")


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-hub")
    build_checkpoint(root / "acme" / "a", "llama", seed=0)
    derive_checkpoint(root / "acme" / "a", root / "acme" / "b", seed=1)
    (root / "results.json").write_text('{"schema_version": 1, "kind": "compare"}')
    (root / "junk.safetensors").write_bytes(b"\xff" * 16)
    (root / "aliases.toml").write_text('[x]\nrepo = "../../etc"\n[y]\nrepo = 3\n')
    return root


class Draws:
    """Seeded random command lines: mostly well-formed (so they get past parsing into the analyses), some hostile."""

    def __init__(self, root, endpoint: str, seed: int):
        self.random = random.Random(seed)
        self.endpoint = endpoint
        self.specs = ["acme/a", "acme/b", "hf:acme/a", "acme/a@main", "acme/a@nope", "acme/zz", "solar", "x", "y",
                      str(root / "acme" / "a"), str(root / "acme" / "b"), str(root / "junk.safetensors"),
                      str(root / "results.json"), str(root), str(root / "missing")]
        self.values = ["layernorm", "attn-k,router", "all", "same", "all-pairs", "cpu", "md", "html", "table",
                       "identity", "norm-gains,cka", "0", "1", "99", "-1", str(2**64), str(root / "out.json")]
        self.aliases = [str(root / "aliases.toml"), str(root / "missing.toml"), str(root)]

    def junk(self) -> str:
        """A hostile value; never a NUL, which neither a command line nor an environment can carry."""
        pick = self.random.random()
        if pick < 0.5:
            return self.random.choice(NASTY)
        if pick < 0.8:
            return str(self.random.randint(-(2**70), 2**70))
        return "".join(self.random.choice(string.printable) for _ in range(self.random.randint(0, 20)))

    def value(self, pool: list[str]) -> str:
        return self.junk() if self.random.random() < 0.3 else self.random.choice(pool)

    def argv(self) -> list[str]:
        command = self.random.choice(sorted(COMMANDS))
        flags = COMMANDS[command] + (STRAY if self.random.random() < 0.1 else ())
        specs = 0 if command in ("models", "groups") else (2 if command in ("compare", "arch", "tokenizer",
                                                                             "provenance") else 1)
        argv = [command, *(self.value(self.specs) for _ in range(specs))]
        for _ in range(self.random.randint(0, 3) if flags else 0):
            name = self.random.choice(flags)
            argv += [name] if name in ("--json", "--no-cache", "--truncate") else [name, self.value(self.values)]
        return argv

    def env(self) -> tuple[dict, str, str | None]:
        if self.random.random() < 0.7:
            return {}, self.endpoint, None
        tuning = {self.random.choice(TUNING): self.junk() for _ in range(self.random.randint(1, 2))}
        endpoint = self.random.choice([self.endpoint, "http://127.0.0.1:9", "ftp://x", "http://[::1", "not a url",
                                       self.endpoint.replace("http://", "http://u:p@"), "http://", ""])
        return tuning, endpoint, self.random.choice([None, *self.aliases])


def check(cli, monkeypatch, argv, env):
    tuning, endpoint, aliases = env
    with monkeypatch.context() as patch:
        for name, value in tuning.items():
            patch.setenv(name, value)
        patch.setenv("HF_ENDPOINT", endpoint)
        if aliases is not None:
            patch.setenv("SOLARFORENSICS_MODELS", aliases)
        code, out, err = cli(*argv)
    assert code != 70, (argv, env, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, env, err)
    return code


def fuzz(cli, monkeypatch, hub_server, fuzz_root, tmp_path, examples: int, seed: int) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    monkeypatch.setattr(hub_module, "TIMEOUT_S", 2.0)
    server = hub_server(fuzz_root)
    monkeypatch.chdir(tmp_path)  # default output names land here
    draws = Draws(fuzz_root, server.url, seed)
    codes = Counter()
    started = time.perf_counter()
    for _ in range(examples):
        argv, env = draws.argv(), draws.env()
        monkeypatch.setattr(constants, "ENDPOINT", env[1])
        codes[check(cli, monkeypatch, argv, env)] += 1
    print(f"[reliability] CLI fuzz: {examples} command lines in {time.perf_counter() - started:.0f} s, "
          f"exit codes {dict(sorted(codes.items()))}")
    assert codes[0] and codes[2]


def test_no_command_line_reaches_an_internal_error(cli, monkeypatch, hub_server, fuzz_root, tmp_path):
    fuzz(cli, monkeypatch, hub_server, fuzz_root, tmp_path, examples=int(os.environ.get("SF_CLI_FUZZ", 150)), seed=0)


@pytest.mark.slow
def test_no_command_line_reaches_an_internal_error_long(cli, monkeypatch, hub_server, fuzz_root, tmp_path):
    fuzz(cli, monkeypatch, hub_server, fuzz_root, tmp_path, examples=3000, seed=1)


# Each once, by hand: the inputs that reached exit 70 before.
@pytest.mark.parametrize("argv, env", [
    (["inspect", "a..b/c"], {}),
    (["inspect", "acme/" + "x" * 120], {}),
    (["compare", "acme/a", "acme/b", "--seed", str(2**70)], {}),
    (["compare", "acme/a", "acme/b", "--permutations", "-5"], {}),
    (["compare", "acme/a", "acme/b", "--workers", "0"], {}),
    (["inspect", "acme/a"], {"SOLARFORENSICS_RETRIES": "abc"}),
    (["inspect", "acme/a"], {"SOLARFORENSICS_TIMEOUT": "-1"}),
])
def test_inputs_that_once_reached_an_internal_error(cli, monkeypatch, hub_server, fuzz_root, argv, env):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    hub_server(fuzz_root)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = cli(*argv)
    assert code == 2 and "internal error" not in err and "Traceback" not in err, err
