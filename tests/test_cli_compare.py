"""`compare`, `matrix`, `report` and `inspect` as a user runs them, against tiny checkpoints on the local Hub."""

import json

import jsonschema
from safetensors import safe_open

from solarforensics.results.document import read_document, schema


def valid(doc: dict) -> dict:
    """Every document our commands write must satisfy the published JSON Schema."""
    jsonschema.Draft202012Validator(schema()).validate(doc)
    return doc


def test_compare_sees_a_fine_tune_and_not_an_independent_model(cli, tiny_hub, tmp_path):
    out = tmp_path / "sft.json"
    code, stdout, _ = cli("compare", "demo/glm-tiny-sft", "demo/glm-tiny", "--tensors", "layernorm", "--out", out)
    assert code == 0, stdout
    derived = valid(read_document(out))
    assert derived["kind"] == "compare" and derived["schema_version"] == 1
    assert derived["summary"]["groups"]["layernorm"]["pearson_mean"] > 0.99
    assert derived["baselines"]["shuffle"]["p_value"] == 1 / 1001
    assert f"results: {out}" in stdout

    out = tmp_path / "indep.json"
    assert cli("compare", "demo/solar-tiny", "demo/glm-tiny", "--out", out)[0] == 0
    independent = valid(read_document(out))
    group = independent["summary"]["groups"]["layernorm"]
    assert group["cosine_mean"] > 0.9  # the trap: raw cosine of all-positive gains is high for any pair
    assert abs(group["pearson_mean"]) < 0.2 and group["p_aggregate"] > 0.01
    assert independent["baselines"]["reference_null"]["cosine_mean"] > 0.9


def test_compare_rows_follow_the_contract(cli, tiny_hub, tmp_path):
    out = tmp_path / "r.json"
    cli("compare", "demo/glm-tiny-sft", "demo/glm-tiny", "--tensors", "layernorm,attn-k", "--control", "demo/solar-tiny", "--out", out)
    doc = valid(read_document(out))
    keys = {"group", "layer_a", "layer_b", "tensor_a", "tensor_b", "shape_a", "shape_b", "comparable", "cosine", "pearson",
            "mad", "rel_l2", "max_abs_diff", "equal_fraction", "bytes_equal", "sha256_a", "sha256_b", "p_shuffle"}
    assert doc["rows"] and all(keys <= set(row) for row in doc["rows"])
    assert {r["group"] for r in doc["rows"]} == {"layernorm", "attn-k"}
    assert [c["vs"] for c in doc["baselines"]["controls"]] == ["a", "b"]
    assert all(s["resolved_commit"] and s["kind"] == "hub" for s in doc["sources"])
    # the MTP layer of the GLM-style checkpoint is never paired with a decoder layer
    assert all(".layers.5." not in r["tensor_b"] for r in doc["rows"])


def test_compare_reads_only_the_selected_bytes(cli, tiny_hub, tmp_path):
    tiny_hub.reset_stats()
    cli("compare", "demo/solar-tiny", "demo/glm-tiny", "--out", tmp_path / "r.json")
    doc = read_document(tmp_path / "r.json")
    served = sum(e["bytes"] for e in tiny_hub.stats()["log"] if e["path"].endswith(".safetensors"))
    headers = sum(_header_bytes(tiny_hub, s["repo"], f["name"]) for s in doc["sources"] for f in s["files"])
    assert served <= 1.1 * (doc["planned_bytes"] + headers)


def _local(server, repo, name):
    return str(server.store.root / repo / name)


def _header_bytes(server, repo, name):
    with open(_local(server, repo, name), "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


def test_all_pairs_gives_layer_matrices_with_a_dominant_diagonal_for_a_fine_tune(cli, tiny_hub, tmp_path):
    out = tmp_path / "lxl.json"
    assert cli("compare", "demo/glm-tiny-sft", "demo/glm-tiny", "--layers", "all-pairs", "--out", out)[0] == 0
    matrices = valid(read_document(out))["layer_matrices"]
    assert set(matrices) == {"attn_norm", "mlp_norm"}
    assert all(m["diagonal_mean"] > 0.99 and m["diagonal_row_max_fraction"] == 1.0 for m in matrices.values())


def test_matrix_reads_each_model_once_and_writes_a_heatmap(cli, tiny_hub, tmp_path):
    tiny_hub.reset_stats()
    out = tmp_path / "m.json"
    code, stdout, _ = cli("matrix", "--models", "demo/glm-tiny,demo/glm-tiny-sft,demo/solar-tiny", "--out", out)
    assert code == 0
    doc = valid(read_document(out))
    pearson = doc["matrices"]["layernorm"]["pearson"]
    assert pearson[0][1] > 0.99 and abs(pearson[0][2]) < 0.2 and pearson[0][0] is None
    assert (tmp_path / "m-layernorm.png").read_bytes().startswith(b"\x89PNG")
    models_info = [e for e in tiny_hub.stats()["log"] if e["path"].startswith("/api/models/") and "/tree/" not in e["path"]]
    assert len(models_info) == 3  # one revision resolution per model: N reads, not N^2


def test_report_renders_markdown_and_html(cli, tiny_hub, tmp_path):
    cli("compare", "demo/solar-tiny", "demo/glm-tiny", "--out", tmp_path / "r.json")
    assert cli("report", tmp_path / "r.json", "--format", "md", "--out", tmp_path / "r.md")[0] == 0
    assert "centered" in (tmp_path / "r.md").read_text()
    assert cli("report", tmp_path / "r.json", "--format", "html", "--out", tmp_path / "r.html")[0] == 0
    html = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html.split("<body", 1)[1].replace("http://www.w3.org", "")


def test_inspect_counts_every_parameter_from_headers_only(cli, tiny_hub):
    tiny_hub.reset_stats()
    code, stdout, _ = cli("inspect", "demo/glm-tiny", "--json")
    doc = valid(json.loads(stdout))
    folder = tiny_hub.store.root / "demo" / "glm-tiny"
    total = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as handle:
            total += sum(handle.get_slice(k).get_shape() and _numel(handle.get_slice(k).get_shape()) for k in handle.keys())
    assert doc["parameters"] == total
    assert doc["tensors"] == sum(s["tensors"] for s in doc["shards"])
    assert doc["bytes_transferred"] > 0 and doc["requests"] >= 3
    tensor_bytes = sum(e["bytes"] for e in tiny_hub.stats()["log"] if e["path"].endswith(".safetensors"))
    assert tensor_bytes < sum(s["size"] for s in doc["shards"]) / 2  # headers, not weights


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_bad_input_is_one_line_and_non_zero(cli, tiny_hub, tmp_path):
    cases = [
        (("compare", "demo/glm-tiny", "demo/solar-tiny", "--tensors", "bogus"), "unknown"),
        (("compare", "demo/glm-tiny", "demo/nope"), "not found"),
        (("compare", "demo/glm-tiny", "demo/solar-tiny", "--layers", "diagonal"), "layer pairing"),
        (("matrix", "--models", "demo/glm-tiny"), "at least two"),
        (("report", tmp_path / "missing.json"), "missing.json"),
        (("inspect", tmp_path / "nothing-here"), "no such file"),
        (("compare", "demo/glm-tiny", "demo/solar-tiny", "--device", "cuda:7"), "cuda"),
        (("compare", "demo/glm-tiny", "demo/phi-tiny", "--tensors", "router", "--out", tmp_path / "x.json"), "--truncate"),
    ]
    for args, message in cases:
        code, stdout, stderr = cli(*args)
        assert code != 0, args
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("solarforensics: error:") and message in lines[0].lower(), (args, stderr)
        assert "Traceback" not in stderr
    assert not (tmp_path / "x.json").exists()  # nothing half-written


def test_truncate_compares_the_common_block_and_says_so(cli, tiny_hub, tmp_path):
    out = tmp_path / "t.json"
    assert cli("compare", "demo/glm-tiny", "demo/phi-tiny", "--tensors", "router", "--truncate", "--out", out)[0] == 0
    rows = valid(read_document(out))["rows"]
    assert rows and all(r["truncated"] and "common leading block [4, 64]" in r["reason"] for r in rows)
