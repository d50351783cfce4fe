"""The claims ledger, judged: each claim of reference/claims.toml names a measure (a quantity read from one step's
results document) and a rule; this module computes the measure and applies the rule. One small function per measure,
one per rule; the ledger itself is data."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean

from solarforensics.datafiles import reference_path
from solarforensics.errors import FormatError

STATUSES = ("stands", "does-not-stand", "untestable")
DEEP_LAYERS = (10, 20, 30, 40)


class NotMeasured(Exception):
    """The quantity could not be computed from this run's documents (the reason is the message)."""


@dataclass(frozen=True)
class Measured:
    value: object
    text: str


@dataclass(frozen=True)
class Run:
    """What the measures read: every step's document by step id, and the model spec of each case role."""

    docs: dict[str, dict]
    roles: dict[str, str]
    step_notes: dict[str, str]  # why a step has no document (failed, not run)

    def doc(self, step: str) -> dict:
        if step not in self.docs:
            raise NotMeasured(self.step_notes.get(step, f"step {step} did not run"))
        return self.docs[step]


def load_claims(name: str = "claims.toml") -> list[dict]:
    path = reference_path(name)
    try:
        with open(path, "rb") as handle:
            claims = tomllib.load(handle).get("claim", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"cannot read the claims ledger {path}: {exc}") from exc
    for claim in claims:
        if claim.get("measure") not in MEASURES or claim.get("rule") not in RULES:
            raise FormatError(f"claim {claim.get('id')!r}: unknown measure or rule", hint=f"see {path}")
    return claims


def judge_claims(claims: list[dict], run: Run) -> list[dict]:
    """Each claim with what was measured and its status (stands / does-not-stand / untestable)."""
    return [judge(claim, run) for claim in claims]


def judge(claim: dict, run: Run) -> dict:
    where = claim.get("where", {})
    record = {
        "id": claim["id"], "claim": claim["claim"],
        "source": f"{claim.get('who', '?')}: {where.get('repo', '?')}, {where.get('file', '?')} "
                  f"({where.get('date', '?')})",
        "test": f"{claim.get('step')}: {claim.get('meaning') or claim.get('why', '')}",
        "published": claim.get("published"), "ledger": claim.get("ledger", []),
    }  # fmt: skip
    try:
        measured = MEASURES[claim["measure"]](run)
    except NotMeasured as why:
        measured = None
        reason = str(why)
    if claim["rule"] == "untestable":
        return {**record, "measured": measured.text if measured else None,
                "value": measured.value if measured else None, "status": "untestable", "why": claim.get("why")}
    if measured is None:
        return {**record, "measured": None, "value": None, "status": "untestable", "why": f"not measured: {reason}"}
    stands = RULES[claim["rule"]](measured.value, claim)
    return {**record, "measured": measured.text, "value": measured.value,
            "status": "stands" if stands else "does-not-stand", "why": None}


def tally(judged: list[dict]) -> dict[str, int]:
    return {status: sum(1 for c in judged if c["status"] == status) for status in STATUSES}


# -- rules -------------------------------------------------------------------------------------------------------


RULES: dict[str, Callable[[object, dict], bool]] = {
    "at_least": lambda value, claim: value >= claim["threshold"],
    "at_most": lambda value, claim: value <= claim["threshold"],
    "within": lambda value, claim: abs(value - claim["target"]) <= claim["tolerance"],
    "equals": lambda value, claim: value == claim["expected"],
    "untestable": lambda value, claim: False,
}


# -- reading documents -------------------------------------------------------------------------------------------


def rows(doc: dict, role: str | None = None, same_layer: bool = True) -> list[dict]:
    found = [r for r in doc.get("rows", []) if r.get("comparable") and (role is None or r.get("role") == role)]
    return [r for r in found if r["layer_a"] == r["layer_b"]] if same_layer else found


def by_layer(doc: dict, role: str, field: str) -> dict[int, float]:
    return {r["layer_a"]: r[field] for r in rows(doc, role) if r.get(field) is not None}


def pair_value(doc: dict, role: str, layer_a: int, layer_b: int, field: str = "cosine") -> float:
    for r in rows(doc, role, same_layer=False):
        if r["layer_a"] == layer_a and r["layer_b"] == layer_b:
            return r[field]
    raise NotMeasured(f"no {role} pair ({layer_a}, {layer_b}) in the within-model matrix")


def group_summary(doc: dict, group: str, key: str) -> float:
    value = ((doc.get("summary") or {}).get("groups") or {}).get(group, {}).get(key)
    if value is None:
        raise NotMeasured(f"no {key} for {group}")
    return value


def _mean(values: list[float], what: str) -> float:
    if not values:
        raise NotMeasured(f"no values for {what}")
    return fmean(values)


# -- measures ----------------------------------------------------------------------------------------------------


def sg_raw_cosine_layers_10_40(run: Run) -> Measured:
    cos = by_layer(run.doc("layernorm"), "attn_norm", "cosine")
    values = [cos[layer] for layer in DEEP_LAYERS if layer in cos]
    mean = _mean(values, "input-norm rows at layers 10-40")
    return Measured(mean, f"input-norm raw cosine at layers 10/20/30/40: {', '.join(f'{v:.6f}' for v in values)} "
                          f"(mean {mean:.4f})")


def raw_cosine_excess_over_unrelated(run: Run) -> Measured:
    sg = run.doc("layernorm")
    pearson = group_summary(sg, "layernorm", "pearson_mean")
    controls = {"a": run.docs.get("layernorm-unrelated-a"), "b": run.docs.get("layernorm-unrelated-b")}
    if not all(controls.values()):
        raise NotMeasured("the unrelated-control comparisons did not run")
    means = {}
    common = None
    for doc in (sg, *controls.values()):
        layers = {(r["role"], r["layer_a"]) for r in rows(doc) if r["role"] in ("attn_norm", "mlp_norm")}
        common = layers if common is None else common & layers
    for name, doc in (("sg", sg), *controls.items()):
        means[name] = _mean([r["cosine"] for r in rows(doc) if (r["role"], r["layer_a"]) in common], name)
    excess = means["sg"] - max(means["a"], means["b"])
    a, b, u = run.roles["a"], run.roles["b"], run.roles["unrelated"]
    return Measured(excess, f"mean raw cosine over the {len(common)} norm tensors all three models have: "
                            f"{a}-{b} {means['sg']:.4f}, {a}-{u} {means['a']:.4f}, {b}-{u} {means['b']:.4f} "
                            f"(excess {excess:+.4f}); centered cosine {a}-{b} {pearson:+.4f}")


def sg_aggregate_shuffle_log10p(run: Run) -> Measured:
    shuffle = run.doc("layernorm").get("baselines", {}).get("shuffle")
    if not shuffle or shuffle.get("log10_p_value") is None:
        raise NotMeasured("no aggregate shuffle null in the layernorm comparison")
    log10p = shuffle["log10_p_value"]
    return Measured(log10p, f"joint residual-permutation null over {shuffle.get('vectors')} norm vectors: "
                            f"p = 10^{log10p:.2f} ({shuffle.get('permutations')} permutations)")


def reference_null_raw_cosine(run: Run) -> Measured:
    null = run.doc("layernorm").get("baselines", {}).get("reference_null")
    if not null or null.get("cosine_mean") is None:
        raise NotMeasured("no reference null in the layernorm comparison")
    return Measured(null["cosine_mean"], f"unrelated vectors with the same per-layer means and spreads: raw cosine "
                                         f"{null['cosine_mean']:.4f} +- {null['cosine_std']:.4f}, centered "
                                         f"{null['pearson_mean']:+.4f} +- {null['pearson_std']:.4f}")


def raw_cosine_minus_reference_null(run: Run) -> Measured:
    """Mean |raw cosine - what moments alone give|: with rho = 0,
    cos = (mu_a mu_b + rho s_a s_b) / sqrt((mu_a^2 + s_a^2)(mu_b^2 + s_b^2)) is the raw cosine of two unrelated
    vectors with these means and spreads."""
    gaps, raws, nulls = [], [], []
    for r in rows(run.doc("layernorm")):
        moments = [r.get(k) for k in ("mean_a", "std_a", "mean_b", "std_b")]
        if None in moments or r["role"] not in ("attn_norm", "mlp_norm"):
            continue
        ma, sa, mb, sb = moments
        null = ma * mb / ((ma * ma + sa * sa) * (mb * mb + sb * sb)) ** 0.5
        gaps.append(abs(r["cosine"] - null))
        raws.append(r["cosine"])
        nulls.append(null)
    gap = _mean(gaps, "norm rows with moments")
    return Measured(gap, f"mean raw cosine {fmean(raws):.4f} vs {fmean(nulls):.4f} for unrelated vectors with the same "
                         f"moments; mean |difference| per layer {gap:.4f}")


def _within(run: Run, step: str) -> tuple[float, float]:
    """(mean raw cosine among layers 10/20/30/40, mean of layer 0 with them) for the input norms of one model."""
    doc = run.doc(step)
    present = {r["layer_a"] for r in rows(doc, "attn_norm", same_layer=False)}
    deep_layers = [layer for layer in DEEP_LAYERS if layer in present]
    deep = [pair_value(doc, "attn_norm", x, y) for i, x in enumerate(deep_layers) for y in deep_layers[i + 1:]]
    zero = [pair_value(doc, "attn_norm", 0, y) for y in deep_layers]
    return _mean(deep, f"deep layer pairs in {step}"), _mean(zero, f"layer-0 pairs in {step}")


def within_deep_raw_cosine(run: Run) -> Measured:
    deep, zero = _within(run, "within-b")
    return Measured(deep, f"{run.roles['b']} input norms: layers 10/20/30/40 with each other {deep:.4f}; layer 0 with "
                          f"them {zero:.4f} (the published 0.377 is this layer-0 value)")


def layer0_gap(run: Run) -> Measured:
    gaps, parts = [], []
    for step, role in (("within-a", "a"), ("within-b", "b"), ("within-unrelated", "unrelated")):
        if step in run.docs:
            deep, zero = _within(run, step)
            gaps.append(deep - zero)
            parts.append(f"{run.roles[role]} {zero:.3f} vs {deep:.3f}")
    gap = min(gaps) if gaps else None
    if gap is None:
        raise NotMeasured("no within-model matrix ran")
    return Measured(gap, "input norm, layer 0 with layers 10-40 vs layers 10-40 with each other: " + "; ".join(parts))


def unrelated_raw_gap(run: Run) -> Measured:
    doc = run.doc("layernorm-matrix")
    models = doc.get("models", [])
    try:
        a, b, u = (models.index(run.roles[k]) for k in ("a", "b", "unrelated"))
        cos = doc["matrices"]["layernorm"]["cosine"]
    except (ValueError, KeyError) as exc:
        raise NotMeasured(f"the matrix lacks a model or the layernorm group ({exc})") from None
    gap = max(abs(cos[a][u] - cos[a][b]), abs(cos[b][u] - cos[a][b]))
    return Measured(gap, f"mean raw cosine of norm gains: {models[a]}-{models[b]} {cos[a][b]:.4f}, "
                         f"{models[a]}-{models[u]} {cos[a][u]:.4f}, {models[b]}-{models[u]} {cos[b][u]:.4f}")


def sg_centered_mean(run: Run) -> Measured:
    doc = run.doc("layernorm")
    value = group_summary(doc, "layernorm", "pearson_mean")
    std = group_summary(doc, "layernorm", "pearson_std")
    raw = group_summary(doc, "layernorm", "cosine_mean")
    return Measured(value, f"centered cosine over {group_summary(doc, 'layernorm', 'comparable')} norm tensors: "
                           f"mean {value:+.4f} (sd {std:.4f}); raw {raw:.4f}")


def derived_centered_mean(run: Run) -> Measured:
    doc = run.doc("layernorm-derived-control")
    value = group_summary(doc, "layernorm", "pearson_mean")
    return Measured(value, f"{run.roles['b']} vs {run.roles['derived']}: centered cosine of norm gains {value:.4f}, "
                           f"raw {group_summary(doc, 'layernorm', 'cosine_mean'):.4f}")


def layer_map_diagonal_excess(run: Run) -> Measured:
    matrices = run.doc("layernorm-layer-map").get("layer_matrices", {})
    parts, excess = [], []
    for role, m in matrices.items():
        if m.get("diagonal_mean") is None or m.get("off_diagonal_mean") is None:
            continue
        excess.append(m["diagonal_mean"] - m["off_diagonal_mean"])
        parts.append(f"{role}: diagonal {m['diagonal_mean']:+.4f} vs off-diagonal {m['off_diagonal_mean']:+.4f}, "
                     f"diagonal is its row's best in {100 * (m.get('diagonal_row_max_fraction') or 0):.0f}% of rows")
    return Measured(max(excess) if excess else _mean([], "layer matrices"), "centered cosine; " + "; ".join(parts))


def kv_router_abs_cosine(run: Run) -> Measured:
    found = rows(run.doc("kv-router"))
    per_role = {role: fmean(abs(r["cosine"]) for r in found if r["role"] == role)
                for role in dict.fromkeys(r["role"] for r in found)}
    value = _mean([abs(r["cosine"]) for r in found], "k/v/router rows")
    return Measured(value, "mean |raw cosine| " + ", ".join(f"{role} {v:.5f}" for role, v in per_role.items())
                    + f" over {len(found)} tensors")


def provenance_verdict(run: Run) -> Measured:
    doc = run.doc("provenance")
    statements = (doc.get("summary") or {}).get("statements") or []
    decisive = ", ".join(doc.get("decisive") or []) or "none"
    return Measured(doc.get("verdict"), f"verdict {doc.get('verdict')}; decisive: {decisive}"
                                        + (f"; {statements[0]}" if statements else ""))


def residual_alignment_found(run: Run) -> Measured:
    tests = [t for t in run.doc("provenance").get("tests", []) if t.get("name") == "residual-alignment"]
    candidates = (tests[0].get("candidates") or {}) if tests else {}
    embedding = next((c for method, c in candidates.items() if "embed" in method), None)
    if embedding is None or embedding.get("effect") is None:
        raise NotMeasured("no string-matched embedding alignment ran")
    effect = embedding["effect"]
    return Measured(effect >= 5.0, f"embedding rows matched by token string: alignment quality "
                                   f"{embedding.get('quality')}, {effect:.1f} null sds above the shuffled-token null "
                                   f"(aligned if >= 5)")


def tokenizer_shared_fraction_a(run: Run) -> Measured:
    doc = run.doc("tokenizer")
    value = doc["shared_tokens"] / doc["vocab_size_a"]
    return Measured(value, f"{doc['shared_tokens']:,} shared strings of {doc['vocab_size_a']:,} ({100 * value:.1f}%) "
                           f"and of {doc['vocab_size_b']:,} ({100 * doc['shared_tokens'] / doc['vocab_size_b']:.1f}%)")


def tokenizer_same_id_fraction(run: Run) -> Measured:
    doc = run.doc("tokenizer")
    value = doc["same_id"] / doc["shared_tokens"] if doc["shared_tokens"] else 0.0
    run_ = doc.get("longest_run") or {}
    return Measured(value, f"{doc['same_id']:,} of {doc['shared_tokens']:,} shared strings keep their id; longest run "
                           f"{run_.get('length')} tokens at offset {run_.get('offset')}")


def same_family_overlap(run: Run) -> Measured:
    doc = run.doc("tokenizer-derived-control")
    share = doc["overlap_vs_smaller"]
    return Measured(share, f"{run.roles['b']} vs {run.roles['derived']}: {100 * share:.1f}% of the smaller "
                           f"vocabulary shared")


def norm_parameter_share_percent(run: Run) -> Measured:
    params = run.doc("arch")["parameters"]["a"]
    value = 100 * params["norms"] / params["total"]
    return Measured(value, f"{params['norms']:,} norm parameters of {params['total']:,} ({value:.5f}%)")


def parameters_a_without_head(run: Run) -> Measured:
    params = run.doc("arch")["parameters"]["a"]
    value = params["total"] - params["lm_head"]
    return Measured(value, f"{params['total']:,} header elements - {params['lm_head']:,} lm_head = {value:,}")


def shared_expert_width_a(run: Run) -> Measured:
    derived = run.doc("arch")["derived"]
    width = derived["a"].get("shared_expert_width_in_files")
    return Measured(width, f"shared expert width in the files: {run.roles['a']} {width}, "
                           f"{run.roles['b']} {derived['b'].get('shared_expert_width_in_files')}")


def license_verbatim_a(run: Run) -> Measured:
    """The licence text at release when the history has it (the first revision of the licence file), else now."""
    doc = run.doc("license-a")
    revisions = [r for r in doc.get("history") or [] if r.get("oid")]
    if revisions:
        first, now = revisions[0], doc
        effects = ", ".join(first.get("effects") or []) or "none found"
        later = (f"; now (since {revisions[-1]['date'][:10]}): '{now.get('title')}', {now.get('classification')}"
                 if len(revisions) > 1 else "")
        return Measured(bool(first.get("verbatim")) and first.get("against") == "apache-2.0",
                        f"release-time {first['file']} (commit {first['commit'][:8]}, {first['date'][:10]}): "
                        f"'{first.get('licence_title')}', {first.get('classification')}, "
                        f"{len(first.get('added_terms') or [])} added terms; effects: {effects}{later}")
    if not doc.get("file"):
        raise NotMeasured("the repo has no licence file")
    effects = ", ".join(e["effect"] for e in doc.get("effects") or []) or "none found"
    return Measured(bool(doc.get("verbatim")), f"{doc['file']}: '{doc.get('title')}', {doc.get('classification')}; "
                                               f"added terms: {effects}; card: {doc.get('declared_note')} (the text "
                                               "now: no history of the licence was read)")


_OTHER_PARTY = re.compile(r"^\+(?!\+\+).*copyright.*(glm|zhipu)", re.IGNORECASE | re.MULTILINE)


def glm_copyright_header_added_a(run: Run) -> Measured:
    """A commit of model a's repo whose diff adds a copyright line naming GLM or Zhipu."""
    doc = run.doc("history-a")
    found = []
    for commit in doc.get("commits") or []:
        for diff in commit.get("diffs") or []:
            lines = _OTHER_PARTY.findall(diff.get("diff") or "")
            if lines and diff.get("oid_before"):  # a line added to a file that existed: a header changed
                found.append((commit, diff["path"]))
    if not found:
        skipped = (doc.get("skipped") or {}).get("commits") or 0
        if skipped:
            raise NotMeasured(f"no such line in the analysed commits, but {skipped} commits were not read")
        return Measured(False, f"no commit of {doc.get('repo')} ({len(doc.get('commits') or [])} commits read) adds a "
                               "copyright line naming GLM or Zhipu")
    commit = found[0][0]
    files = ", ".join(path for c, path in found if c is commit)
    return Measured(True, f"commit {commit['commit'][:8]} ({commit['date'][:16]}Z, '{commit['title']}') adds a copyright "
                          f"line naming GLM/Zhipu to {files}" + (f"; {len(found)} file changes in all" if len(found) > 1
                                                                 else ""))


MTP_RULES = ("ignores checkpoint layers from a fixed index", "compares the layer index with a fixed number")


def mtp_layer_skip_rule_a(run: Run) -> Measured:
    """Whether the code that loads model a skips layers from GLM's MTP index (46 for GLM-4.5-Air, 92 for GLM-4.5)."""
    doc = run.doc("code-a")
    compared = [f for f in doc.get("files") or [] if f.get("status") == "compared"]
    if not compared:
        raise NotMeasured("no Python file of the repo (or loading it) could be compared")
    hits = [r for r in doc.get("rules") or [] if r.get("rule") in MTP_RULES and r.get("value") in ("46", "92")]
    theirs = [r for r in doc.get("reference_rules") or [] if r.get("rule") in MTP_RULES and r.get("value")]
    where = "; ".join(f"{f['file']} ({f['origin']})" for f in compared)
    reference = (f"; {theirs[0]['file']}:{theirs[0]['line']} has `{theirs[0]['text']}`" if theirs else "")
    if hits:
        return Measured(True, f"{hits[0]['file']}:{hits[0]['line']} `{hits[0]['text']}`{reference}; compared: {where}")
    return Measured(False, f"no rule skipping layers >= 46 in the code compared ({where}){reference}; "
                           f"{doc.get('identical_count')} functions/classes identical to the reference")


def none(run: Run) -> Measured:
    raise NotMeasured("no measurement applies")


MEASURES: dict[str, Callable[[Run], Measured]] = {f.__name__: f for f in (
    sg_raw_cosine_layers_10_40, raw_cosine_excess_over_unrelated, sg_aggregate_shuffle_log10p,
    reference_null_raw_cosine, raw_cosine_minus_reference_null, within_deep_raw_cosine, layer0_gap,
    unrelated_raw_gap, sg_centered_mean, derived_centered_mean, layer_map_diagonal_excess, kv_router_abs_cosine,
    provenance_verdict, residual_alignment_found, tokenizer_shared_fraction_a, tokenizer_same_id_fraction,
    same_family_overlap, norm_parameter_share_percent, parameters_a_without_head, shared_expert_width_a,
    license_verbatim_a, glm_copyright_header_added_a, mtp_layer_skip_rule_a, none,
)}
