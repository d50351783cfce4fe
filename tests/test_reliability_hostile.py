"""Hostile models: text that came from a model (tensor names, config values, tokenizer, licence, card metadata) can
never act on the terminal in any command or renderer; files outside a model folder are never read, by a local source
or by `hub serve`; a folder spec is not searched recursively; repo ids huggingface_hub refuses are one clean line."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from solarforensics.checkpoints import build_checkpoint

# Retitle the window, ring, clear the screen, move the cursor home, flip the text direction, an 8-bit CSI, a return.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\u202eDERIVED\x9b31m\r"
ACTIVE = ("\x1b", "\x07", "\x9b", "\r", "\u202e")  # none of these may reach a terminal


@pytest.fixture(scope="module")
def evil_root(tmp_path_factory) -> Path:
    """ROOT/acme/evil: a llama checkpoint carrying EVIL in a tensor name, config.json, tokenizer.json, LICENSE and the
    model card's licence; ROOT/acme/plain: an ordinary one to compare it with."""
    root = tmp_path_factory.mktemp("hostile")
    model = build_checkpoint(root / "acme" / "evil", "llama", seed=3)
    build_checkpoint(root / "acme" / "plain", "llama", seed=4)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    shard = sorted(model.glob("*.safetensors"))[0]
    tensors = load_file(shard)
    tensors[f"model.extra{EVIL}.weight"] = torch.ones(4)
    save_file(tensors, shard, metadata={"format": "pt"})
    index["weight_map"][f"model.extra{EVIL}.weight"] = shard.name
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "torch_dtype": f"bfloat16{EVIL}"}))
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"][f"tok{EVIL}"] = max(tokenizer["model"]["vocab"].values()) + 1
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    (model / "LICENSE").write_text(f"Apache License\nVersion 2.0, January 2004\n{EVIL}\nTERMS AND CONDITIONS{EVIL}\n")
    (model / "README.md").write_text(f'---\nlicense: "apache-2.0{EVIL}"\nlicense_name: "x{EVIL}"\n---\n# card\n')
    return root


def active(text: str) -> list[str]:
    return [repr(c) for c in ACTIVE if c in text]


def test_model_text_never_acts_on_the_terminal(cli, evil_root, hub_server, tmp_path):
    hub_server(evil_root)
    out = tmp_path / "out"
    local = str(evil_root / "acme" / "evil")
    runs = {
        "inspect": ("inspect", local),
        "inspect --json": ("inspect", "acme/evil", "--json"),
        "arch": ("arch", local, evil_root / "acme" / "plain", "--out", out / "arch.json"),
        "tokenizer": ("tokenizer", local, evil_root / "acme" / "plain", "--out", out / "tok.json"),
        "license (folder)": ("license", local, "--out", out / "lic.json"),
        "license (Hub card)": ("license", "acme/evil", "--out", out / "lic-hub.json"),
        "compare": ("compare", local, "acme/plain", "--tensors", "all", "--permutations", "0", "--out",
                    out / "cmp.json"),
        "compare --json": ("compare", local, "acme/plain", "--tensors", "all", "--permutations", "0", "--json",
                           "--out", out / "cmp2.json"),
        "matrix": ("matrix", "--models", f"{local},acme/plain", "--tensors", "model.extra*,layernorm", "--out",
                   out / "m.json"),
        "provenance": ("provenance", local, "acme/plain", "--tests", "identity", "--out", out / "p.json"),
        "report": ("report", out / "cmp.json", out / "lic.json", out / "arch.json", out / "tok.json"),
        "report md": ("report", out / "cmp.json", out / "lic-hub.json", "--format", "md", "--out", out / "r.md"),
        "report html": ("report", out / "cmp.json", "--format", "html", "--out", out / "r.html"),
        "an error naming the text": ("compare", local, "acme/plain", "--tensors", f"x{EVIL}*", "--out", out / "x.json"),
        "a spec carrying it": ("inspect", f"acme/evil{EVIL}"),
    }
    for what, args in runs.items():
        code, stdout, stderr = cli(*args)
        assert code in (0, 2), (what, stderr)
        assert not active(stdout + stderr), what
    for path in out.rglob("*"):
        if path.suffix in (".json", ".md", ".html"):
            assert not active(path.read_text(encoding="utf-8")), path.name
    # The data is kept: JSON escapes what it would otherwise carry raw, and reads back as the model has it.
    doc = json.loads((out / "cmp.json").read_text())
    assert f"model.extra{EVIL}.weight" in doc["only_in_a"]
    assert "\\u009b" in (out / "cmp.json").read_text()


# -- files outside the model folder ----------------------------------------------------------------------------------

@pytest.fixture
def linked_out(tmp_path) -> Path:
    """A model folder whose LICENSE, tokenizer.json and an extra shard are links to files outside it."""
    model = build_checkpoint(tmp_path / "m", "llama", seed=5)
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "private.txt").write_text("SfSecretOutside: Apache License Version 2.0 TERMS AND CONDITIONS\n")
    for name in ("LICENSE", "tokenizer.json"):
        (model / name).unlink(missing_ok=True)
        (model / name).symlink_to(secret / "private.txt")
    shutil.copy(sorted(model.glob("*.safetensors"))[0], secret / "stray.safetensors")
    (model / "stray.safetensors").symlink_to(secret / "stray.safetensors")
    return model


def test_a_local_folder_never_reads_through_a_link_out_of_it(cli, linked_out, tmp_path):
    code, out, err = cli("license", linked_out, "--out", tmp_path / "l.json")
    assert code == 2 and "no licence file" in err
    code, out, err = cli("inspect", linked_out, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "SfSecretOutside" not in out and "stray.safetensors" not in json.dumps(doc["shards"])
    code, _, err = cli("tokenizer", linked_out, linked_out, "--out", tmp_path / "t.json")
    assert "SfSecretOutside" not in err


def test_a_huggingface_cache_snapshot_still_reads_through_its_blob_links(cli, tmp_path):
    model = build_checkpoint(tmp_path / "src", "llama", seed=6, tokenizer=False)
    repo = tmp_path / "hub" / "models--acme--m"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True), blobs.mkdir()
    for file in model.iterdir():
        shutil.copy(file, blobs / file.name)
        (snapshot / file.name).symlink_to(Path("../../blobs") / file.name)
    code, out, err = cli("inspect", snapshot, "--json")
    assert code == 0, err
    assert json.loads(out)["tensors"] > 0


def test_hub_serve_never_serves_a_link_out_of_the_repo(cli, linked_out, hub_server, tmp_path):
    root = tmp_path / "served"
    (root / "acme").mkdir(parents=True)
    shutil.copytree(linked_out, root / "acme" / "m", symlinks=True)
    (root / "acme" / "m" / "broken").symlink_to(tmp_path / "nowhere")
    server = hub_server(root)
    from huggingface_hub import HfApi

    files = HfApi(endpoint=server.url).list_repo_files("acme/m")
    assert "LICENSE" not in files and "stray.safetensors" not in files and "broken" not in files
    assert "config.json" in files
    import httpx2

    answer = httpx2.get(f"{server.url}/acme/m/resolve/main/LICENSE")
    assert answer.status_code == 404 and b"SfSecretOutside" not in answer.content


def test_a_folder_spec_is_not_searched_recursively(cli, tmp_path):
    build_checkpoint(tmp_path / "models" / "deep" / "m", "llama", seed=7, tokenizer=False)
    code, _, err = cli("inspect", tmp_path / "models")
    assert code == 2 and "no safetensors weights found" in err


# -- repo ids ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["a..b/c", "a/b--c", "acme/" + "x" * 97, "acme/-x", "acme/x."])
def test_a_repo_id_huggingface_hub_refuses_is_one_clean_line(cli, spec):
    code, out, err = cli("inspect", spec)
    assert code == 2 and out == ""
    assert err.startswith("solarforensics: error: ") and err.count("\n") == 1 and "internal error" not in err
