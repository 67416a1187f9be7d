"""The tensor plan: which output tensor comes from which models' tensors, with which parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lossless.errors import LosslessError
from lossless.merge.jobs import MergePlan, TensorJob, TensorRef
from lossless.merge.planner import build_plan, describe_params
from lossless.recipe.model import InputModel, MergeStep, ModelRef, Slice

H, V, FF = 8, 16, 12  # hidden size, vocabulary, MLP width of the fake models


@dataclass
class FakeSource:
    """A TensorSource with names, shapes and dtypes only: enough for the planner."""

    label: str
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str] = field(default_factory=dict)

    def tensor_names(self) -> list[str]:
        return list(self.shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def dtype(self, name: str) -> str:
        return self.dtypes.get(name, "F32")

    def get(self, name: str) -> Any:
        raise AssertionError("the planner must not read tensors")


def llama(label: str, layers: int = 3, *, tied: bool = False, bias: bool = False,
          family: str = "llama", dtype: str = "F32", hidden: int = H) -> FakeSource:  # fmt: skip
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        for proj in ("q", "k", "v", "o"):
            shapes[p + f"self_attn.{proj}_proj.weight"] = (hidden, hidden)
        if bias:  # Qwen2 has q/k/v biases
            for proj in ("q", "k", "v"):
                shapes[p + f"self_attn.{proj}_proj.bias"] = (hidden,)
        shapes[p + "mlp.up_proj.weight"] = (FF, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, FF)
    shapes["model.norm.weight"] = (hidden,)
    if not tied:
        shapes["lm_head.weight"] = (V, hidden)
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[family]
    config = {"model_type": family, "architectures": [arch], "num_hidden_layers": layers,
              "tie_word_embeddings": tied}  # fmt: skip
    return FakeSource(label, config, shapes, dict.fromkeys(shapes, dtype))


def gpt2(label: str, layers: int = 2) -> FakeSource:
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (V, H),
        "transformer.wpe.weight": (32, H),
    }
    for i in range(layers):
        shapes[f"transformer.h.{i}.attn.c_attn.weight"] = (H, 3 * H)
        shapes[f"transformer.h.{i}.ln_1.bias"] = (H,)
    shapes["transformer.ln_f.weight"] = (H,)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": layers}
    return FakeSource(label, config, shapes)  # no lm_head: GPT-2 always ties


def sources(*models: FakeSource) -> dict[str, FakeSource]:
    return {m.label: m for m in models}


def inp(name: str, layers: tuple[int, int] | None = None, **params: Any) -> InputModel:
    return InputModel(ModelRef.parse(name), params, layers)


def step(method: str, **kwargs: Any) -> MergeStep:
    if "base_model" in kwargs:
        kwargs["base_model"] = ModelRef.parse(kwargs["base_model"])
    return MergeStep(name="merged", merge_method=method, **kwargs)


def job(plan: MergePlan, output: str) -> TensorJob:
    (found,) = [j for j in plan.jobs if j.output == output]
    return found


def q(layer: int) -> str:
    return f"model.layers.{layer}.self_attn.q_proj.weight"


def test_linear_models_one_job_per_tensor_in_checkpoint_order() -> None:
    a, b = llama("a"), llama("b")
    plan = build_plan(
        step("linear", models=(inp("a", weight=0.3), inp("b", weight=0.7))), sources(a, b)
    )
    assert [j.output for j in plan.jobs] == a.tensor_names()
    j = job(plan, q(1))
    assert j.sources == (TensorRef("a", q(1)), TensorRef("b", q(1)))
    assert j.base is None and j.method == "linear" and j.layer == 1 and j.shape == (H, H)
    assert j.model_params == ({"weight": 0.3}, {"weight": 0.7})
    assert j.params == {"normalize": True}  # the table's default
    assert plan.config_source == "a" and plan.config_updates == {"num_hidden_layers": 3}
    assert job(plan, "lm_head.weight").layer is None


def test_base_is_passed_apart_and_appended_when_not_listed() -> None:
    models = (inp("a", weight=1.0), inp("b", weight=0.5, density=0.4))
    plan = build_plan(
        step("ties", models=models, base_model="base"),
        sources(llama("a"), llama("b"), llama("base")),
    )
    j = job(plan, q(0))
    assert j.base == TensorRef("base", q(0))
    assert [r.model for r in j.sources] == ["a", "b"]
    assert j.model_params == ({"weight": 1.0, "density": 1.0}, {"weight": 0.5, "density": 0.4})
    assert j.params == {"normalize": True, "int8_mask": False, "lambda": 1.0, "rescale": False}
    assert plan.config_source == "base"


def test_base_listed_in_models_is_not_a_source_and_needs_no_weight() -> None:
    models = (inp("base"), inp("a", weight=1.0))
    plan = build_plan(
        step("task_arithmetic", models=models, base_model="base"),
        sources(llama("a"), llama("base")),
    )
    j = job(plan, "model.embed_tokens.weight")
    assert j.base == TensorRef("base", "model.embed_tokens.weight")
    assert j.sources == (TensorRef("a", "model.embed_tokens.weight"),)


def test_gradient_over_layers_and_t0_for_non_layer_tensors() -> None:
    # 5 layers: t = 0, .25, .5, .75, 1 on [0, 0.5, 1] → 0, .25, .5, .75, 1 ; embeddings/head t = 0
    plan = build_plan(
        step("linear", models=(inp("a", weight=[0, 0.5, 1]), inp("b", weight=[1, 0]))),
        sources(llama("a", 5), llama("b", 5)),
    )
    weights = [job(plan, q(i)).model_params[0]["weight"] for i in range(5)]
    assert weights == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert [job(plan, q(i)).model_params[1]["weight"] for i in (0, 2, 4)] == pytest.approx(
        [1, 0.5, 0]
    )
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert job(plan, name).model_params[0]["weight"] == 0.0


def test_filters_see_each_tensor_name() -> None:
    weight = [
        {"filter": "self_attn", "value": 0.1},
        {"filter": "mlp", "value": 0.2},
        {"value": 0.9},
    ]
    plan = build_plan(
        step("linear", models=(inp("a", weight=weight), inp("b", weight=1))),
        sources(llama("a"), llama("b")),
    )
    assert job(plan, q(2)).model_params[0]["weight"] == 0.1
    assert job(plan, "model.layers.2.mlp.up_proj.weight").model_params[0]["weight"] == 0.2
    assert job(plan, "model.norm.weight").model_params[0]["weight"] == 0.9


def test_four_precedence_levels() -> None:
    # models[].parameters beat top-level parameters
    plan = build_plan(
        step("ties", models=(inp("a", weight=0.2), inp("b")), base_model="base",
             parameters={"weight": 0.6, "density": 0.5, "lambda": 2.0}),
        sources(llama("a"), llama("b"), llama("base")),
    )  # fmt: skip
    assert job(plan, q(0)).model_params == (
        {"weight": 0.2, "density": 0.5},
        {"weight": 0.6, "density": 0.5},
    )
    assert job(plan, q(0)).params["lambda"] == 2.0
    # slices[].sources[].parameters beat slices[].parameters beat top-level parameters
    sl = Slice(
        sources=(inp("base", (0, 3)), inp("a", (0, 3), weight=0.1), inp("b", (0, 3))),
        parameters={"weight": 0.4, "density": [{"filter": "mlp", "value": 0.3}], "lambda": 0.5},
        base_model=ModelRef("base"),
    )
    plan = build_plan(
        step("ties", slices=(sl,), parameters={"weight": 0.6, "density": 0.7, "lambda": 2.0}),
        sources(llama("a"), llama("b"), llama("base")),
    )
    assert job(plan, q(0)).model_params == (
        {"weight": 0.1, "density": 0.7},
        {"weight": 0.4, "density": 0.7},
    )
    up = job(plan, "model.layers.0.mlp.up_proj.weight")
    assert [p["density"] for p in up.model_params] == [
        0.3,
        0.3,
    ]  # filter matched at the slice level
    assert up.params["lambda"] == 0.5


def test_frankenmerge_layer_count_and_provenance() -> None:
    # a[0,2) + b[1,3) + a[1,3): 6 output layers, overlapping ranges stack layers
    slices = (
        Slice(sources=(inp("a", (0, 2)),)),
        Slice(sources=(inp("b", (1, 3)),)),
        Slice(sources=(inp("a", (1, 3)),), parameters={"scale": 0.5}),
    )
    plan = build_plan(step("passthrough", slices=slices), sources(llama("a"), llama("b")))
    assert plan.config_updates == {"num_hidden_layers": 6} and plan.config_source == "a"
    expected = [("a", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 1), ("a", 2)]
    for out, (model, layer) in enumerate(expected):
        j = job(plan, q(out))
        assert j.sources == (TensorRef(model, q(layer)),) and j.layer == out
        assert j.model_params == ({"scale": 0.5 if out >= 4 else 1.0},)
    assert job(plan, "model.embed_tokens.weight").sources == (
        TensorRef("a", "model.embed_tokens.weight"),
    )
    assert len(plan.jobs) == 3 + 6 * 7


def test_head_and_norm_come_from_the_last_slice() -> None:
    slices = (Slice(sources=(inp("a", (0, 2)),)), Slice(sources=(inp("b", (0, 1)),)))
    plan = build_plan(step("passthrough", slices=slices), sources(llama("a"), llama("b")))
    assert job(plan, "model.embed_tokens.weight").sources[0].model == "a"
    assert job(plan, "model.norm.weight").sources[0].model == "b"
    assert job(plan, "lm_head.weight").sources[0].model == "b"


def test_per_slice_base_model() -> None:
    slices = (
        Slice(sources=(inp("a", (0, 2)), inp("b", (0, 2), weight=1)), base_model=ModelRef("a")),
        Slice(sources=(inp("a", (2, 3), weight=1), inp("b", (2, 3))), base_model=ModelRef("b")),
    )
    plan = build_plan(
        step("task_arithmetic", slices=slices, base_model="a"), sources(llama("a"), llama("b"))
    )
    assert job(plan, q(1)).base == TensorRef("a", q(1)) and job(plan, q(1)).sources[0].model == "b"
    assert job(plan, q(2)).base == TensorRef("b", q(2)) and job(plan, q(2)).sources[0].model == "a"
    assert job(plan, "lm_head.weight").base == TensorRef("b", "lm_head.weight")  # last slice's base


def test_slice_base_must_be_a_source() -> None:
    slices = (Slice(sources=(inp("a", (0, 3), weight=1),), base_model=ModelRef("b")),)
    with pytest.raises(LosslessError, match=r"slices\[0\]: base model b is not one of"):
        build_plan(step("ties", slices=slices), sources(llama("a"), llama("b")))


def test_tied_output_has_no_head_and_untied_output_takes_tied_models_embedding() -> None:
    tied, untied = llama("tied", tied=True), llama("untied")
    plan = build_plan(
        step("linear", models=(inp("tied", weight=1), inp("untied", weight=1))),
        sources(tied, untied),
    )
    assert "lm_head.weight" not in [j.output for j in plan.jobs]
    plan = build_plan(
        step("linear", models=(inp("untied", weight=1), inp("tied", weight=1))),
        sources(tied, untied),
    )
    assert job(plan, "lm_head.weight").sources == (
        TensorRef("untied", "lm_head.weight"),
        TensorRef("tied", "model.embed_tokens.weight"),
    )


def test_qwen2_biases_are_planned() -> None:
    a, b = llama("a", bias=True, family="qwen2"), llama("b", bias=True, family="qwen2")
    plan = build_plan(
        step("linear", models=(inp("a", weight=1), inp("b", weight=1))), sources(a, b)
    )
    j = job(plan, "model.layers.2.self_attn.k_proj.bias")
    assert j.shape == (H,) and j.sources[1] == TensorRef(
        "b", "model.layers.2.self_attn.k_proj.bias"
    )
    assert len(plan.jobs) == len(a.shapes)


def test_mismatched_shapes_name_models_tensor_and_shapes() -> None:
    models = (inp("a", weight=1), inp("wide", weight=1))
    with pytest.raises(LosslessError) as err:
        build_plan(step("linear", models=models), sources(llama("a"), llama("wide", hidden=H * 2)))
    text = str(err.value)
    assert (
        "model.embed_tokens.weight" in text
        and "(16, 8) in a" in text
        and "(16, 16) in wide" in text
    )
    assert "--allow-crimes" in text


def test_missing_tensor_and_family_mismatch_fail_unless_crimes() -> None:
    models = (inp("a", weight=1), inp("q", weight=1))
    qwen = llama("q", bias=True, family="qwen2")
    with pytest.raises(LosslessError, match=r"different families.*a is llama.*q is qwen2"):
        build_plan(step("linear", models=models), sources(llama("a"), qwen))
    plain = llama("p", family="qwen2")  # same family, attention without biases
    with pytest.raises(
        LosslessError, match=r"p has no tensor model\.layers\.0\.self_attn\.q_proj\.bias"
    ):
        build_plan(
            step("linear", models=(inp("q", weight=1), inp("p", weight=1))), sources(qwen, plain)
        )
    with pytest.raises(LosslessError, match="layer 0 of q has tensors that layer 0 of p lacks"):
        build_plan(
            step("linear", models=(inp("p", weight=1), inp("q", weight=1))), sources(qwen, plain)
        )


def test_allow_crimes_leaves_out_what_does_not_match() -> None:
    qwen, plain = llama("q", bias=True, family="qwen2"), llama("p")
    plan = build_plan(
        step("linear", models=(inp("q", weight=1), inp("p", weight=1))),
        sources(qwen, plain),
        allow_crimes=True,
    )
    bias = job(plan, "model.layers.0.self_attn.q_proj.bias")
    assert bias.sources == (TensorRef("q", "model.layers.0.self_attn.q_proj.bias"),)
    assert len(job(plan, q(0)).sources) == 2
    # ties without the base's tensor cannot run: the first input's tensor is copied
    models = (inp("q", weight=1),)
    plan = build_plan(
        step("ties", models=models, base_model="p"), sources(qwen, plain), allow_crimes=True
    )
    assert job(plan, "model.layers.0.self_attn.q_proj.bias").method == "passthrough"
    assert job(plan, q(0)).method == "ties"


def test_gpt2_naming_layer_key_and_always_tied_head() -> None:
    slices = (Slice(sources=(inp("g", (0, 2)),)), Slice(sources=(inp("h", (1, 2)),)))
    plan = build_plan(step("passthrough", slices=slices), sources(gpt2("g"), gpt2("h")))
    assert plan.config_updates == {"n_layer": 3}
    assert job(plan, "transformer.h.2.attn.c_attn.weight").sources == (
        TensorRef("h", "transformer.h.1.attn.c_attn.weight"),
    )
    assert [j.output for j in plan.jobs if j.layer is None] == [
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"
    ]  # fmt: skip


def test_dtypes() -> None:
    srcs = sources(llama("a", dtype="BF16"), llama("b", dtype="BF16"))
    models = (inp("a", weight=1), inp("b", weight=1))
    j = job(build_plan(step("linear", models=models), srcs), q(0))
    assert (j.compute_dtype, j.out_dtype) == ("float32", "bfloat16")
    j = job(build_plan(step("linear", models=models, dtype="float16"), srcs), q(0))
    assert (j.compute_dtype, j.out_dtype) == ("float16", "float16")
    j = job(
        build_plan(step("linear", models=models, dtype="bfloat16", out_dtype="float32"), srcs), q(0)
    )
    assert (j.compute_dtype, j.out_dtype) == ("bfloat16", "float32")
    mixed = sources(llama("a", dtype="BF16"), llama("b", dtype="F16"))
    assert job(build_plan(step("linear", models=models), mixed), q(0)).out_dtype == "float32"


def test_user_errors() -> None:
    two = sources(llama("a"), llama("b"), llama("short", 2))
    with pytest.raises(LosslessError, match="needs parameter weight of b"):
        build_plan(step("linear", models=(inp("a", weight=1), inp("b"))), two)
    with pytest.raises(LosslessError, match="same number of layers"):
        build_plan(step("linear", models=(inp("a", weight=1), inp("short", weight=1))), two)
    with pytest.raises(LosslessError, match=r"layer_range \[2, 4\) of a is outside its 3 layers"):
        build_plan(step("passthrough", slices=(Slice(sources=(inp("a", (2, 4)),)),)), two)
    with pytest.raises(LosslessError, match=r"models: ties needs a `base_model` \(the model"):
        build_plan(step("ties", models=(inp("a", weight=1),)), two)
    with pytest.raises(
        LosslessError, match=r"models: passthrough takes exactly 1 model; got 2 \(a, b\)"
    ):
        build_plan(step("passthrough", models=(inp("a"), inp("b"))), two)
    with pytest.raises(LosslessError, match="listed twice"):
        build_plan(step("linear", models=(inp("a", weight=1), inp("a", weight=1))), two)
    with pytest.raises(LosslessError, match="modules"):
        build_plan(step("linear", modules={"text": {}}), two)
    with pytest.raises(LosslessError, match="unknown merge method 'tie'"):
        build_plan(step("tie", models=(inp("a"),)), two)


def test_describe_params_rows() -> None:
    plan = build_plan(
        step("linear", models=(inp("a", weight=[0, 1]), inp("b", weight=1))),
        sources(llama("a"), llama("b")),
    )
    rows = [r for r in describe_params(plan) if r["tensor"] == q(2)]
    assert rows == [
        {"layer": 2, "tensor": q(2), "model": "*", "param": "normalize", "value": True},
        {"layer": 2, "tensor": q(2), "model": "a", "param": "weight", "value": 1.0},
        {"layer": 2, "tensor": q(2), "model": "b", "param": "weight", "value": 1.0},
    ]


class CheckpointHeader:
    """Names, shapes and dtypes of a saved tiny model, read from safetensors headers."""

    def __init__(self, path: Any, label: str) -> None:
        import json

        from safetensors import safe_open

        self.label = label
        self.config = json.loads((path / "config.json").read_text())
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    part = f.get_slice(name)
                    self.shapes[name] = tuple(part.get_shape())
                    self.dtypes[name] = part.get_dtype()

    def tensor_names(self) -> list[str]:
        return list(self.shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def dtype(self, name: str) -> str:
        return self.dtypes[name]

    def get(self, name: str) -> Any:
        raise AssertionError("the planner must not read tensors")


def test_real_checkpoints_tied_qwen2_and_llama_frankenmerge(tmp_path: Any) -> None:
    from tests.factories import make_model

    qa = make_model(tmp_path / "qa", "qwen2", seed=1, tokenizer=False, tie_word_embeddings=True)
    qb = make_model(tmp_path / "qb", "qwen2", seed=2, tokenizer=False, tie_word_embeddings=True)
    srcs = {"qa": CheckpointHeader(qa, "qa"), "qb": CheckpointHeader(qb, "qb")}
    plan = build_plan(step("linear", models=(inp("qa", weight=1), inp("qb", weight=1))), srcs)
    assert "lm_head.weight" not in srcs["qa"].shapes  # transformers omits a tied head
    assert {j.output: j.shape for j in plan.jobs} == srcs["qa"].shapes
    assert job(plan, "model.layers.1.self_attn.v_proj.bias").shape == (16,)  # 2 kv heads × 8

    la = make_model(tmp_path / "la", "llama", seed=1, tokenizer=False, dtype="bfloat16")
    three = make_model(tmp_path / "l3", "llama", layers=3, seed=3, tokenizer=False)
    slices = (Slice(sources=(inp("la", (0, 2)),)), Slice(sources=(inp("la", (1, 2)),)))
    plan = build_plan(step("passthrough", slices=slices), {"la": CheckpointHeader(la, "la")})
    # the planned output is exactly the tensors of a real 3-layer model of the same family
    assert {j.output: j.shape for j in plan.jobs} == CheckpointHeader(three, "l3").shapes
    assert plan.config_updates == {"num_hidden_layers": 3}
    assert {j.out_dtype for j in plan.jobs} == {"bfloat16"}


def test_method_without_base_merges_an_appended_base_like_any_model() -> None:
    # mergekit appends base_model to `models`; linear ignores "base" and weighs it like the rest
    models = (inp("a", weight=0.3),)
    srcs = sources(llama("a"), llama("base"))
    plan = build_plan(
        step("linear", models=models, base_model="base", parameters={"weight": 0.1}), srcs
    )
    j = job(plan, q(0))
    assert j.base is None and [r.model for r in j.sources] == ["a", "base"]
    assert j.model_params == ({"weight": 0.3}, {"weight": 0.1})
    with pytest.raises(LosslessError, match="needs parameter weight of base"):
        build_plan(step("linear", models=models, base_model="base"), srcs)


def test_vocab_axis_and_tokenizer_source_allow_different_vocabularies() -> None:
    small, big = llama("small"), llama("big")
    big.shapes["model.embed_tokens.weight"] = (V + 4, H)
    big.shapes["lm_head.weight"] = (V + 4, H)
    models = (inp("small", weight=1), inp("big", weight=1))
    with pytest.raises(LosslessError, match=r"\(16, 8\) in small .* \(20, 8\) in big"):
        build_plan(step("linear", models=models), sources(small, big))
    plan = build_plan(step("linear", models=models, tokenizer_source="union"), sources(small, big))
    embed = job(plan, "model.embed_tokens.weight")
    assert embed.vocab_axis == 0 and len(embed.sources) == 2
    assert job(plan, "lm_head.weight").vocab_axis == 0
    assert job(plan, q(0)).vocab_axis is None and job(plan, "model.norm.weight").vocab_axis is None


def test_canonical_slerp_config_with_filtered_gradients() -> None:
    # the README-style mergekit slerp over 5 layers: t per layer and per tensor kind
    t = [
        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
        {"value": 0.5},
    ]
    sl = Slice(sources=(inp("a", (0, 5)), inp("b", (0, 5))))
    plan = build_plan(
        step("slerp", slices=(sl,), base_model="a", parameters={"t": t}),
        sources(llama("a", 5), llama("b", 5)),
    )
    # 5 layers → t = i/4 lands exactly on the gradient's points
    assert [job(plan, q(i)).params["t"] for i in range(5)] == pytest.approx([0, 0.5, 0.3, 0.7, 1])
    up = [job(plan, f"model.layers.{i}.mlp.up_proj.weight").params["t"] for i in range(5)]
    assert up == pytest.approx([1, 0.5, 0.7, 0.3, 0])
    assert job(plan, "model.layers.3.input_layernorm.weight").params["t"] == 0.5
    assert job(plan, "model.embed_tokens.weight").params["t"] == 0.5
    j = job(plan, q(2))
    assert j.base == TensorRef("a", q(2)) and j.sources == (TensorRef("b", q(2)),)
    assert j.model_params == ({},)


def neox(label: str, layers: int = 2) -> FakeSource:
    shapes: dict[str, tuple[int, ...]] = {"gpt_neox.embed_in.weight": (V, H)}
    for i in range(layers):
        shapes[f"gpt_neox.layers.{i}.attention.query_key_value.weight"] = (3 * H, H)
        shapes[f"gpt_neox.layers.{i}.input_layernorm.bias"] = (H,)
    shapes["gpt_neox.final_layer_norm.weight"] = (H,)
    shapes["embed_out.weight"] = (V, H)
    config = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
              "num_hidden_layers": layers, "tie_word_embeddings": False}  # fmt: skip
    return FakeSource(label, config, shapes)


def test_gpt_neox_naming_embed_in_first_embed_out_last() -> None:
    slices = (Slice(sources=(inp("x", (0, 2)),)), Slice(sources=(inp("y", (0, 1)),)))
    plan = build_plan(step("passthrough", slices=slices), sources(neox("x"), neox("y")))
    assert plan.config_updates == {"num_hidden_layers": 3}
    assert job(plan, "gpt_neox.embed_in.weight").sources[0].model == "x"
    assert job(plan, "embed_out.weight").sources[0].model == "y"
    assert job(plan, "gpt_neox.layers.2.input_layernorm.bias").sources == (
        TensorRef("y", "gpt_neox.layers.0.input_layernorm.bias"),
    )
    assert plan.jobs[0].output == "gpt_neox.embed_in.weight"
    assert plan.jobs[-1].output == "embed_out.weight"
