"""Model cards (hub/cards.py): what a step's output derives from, in hub terms; adapters' base."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lossless.hub.cards import Score, lineage, render_card
from lossless.validation.recipe_check import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_lineage_walks_steps_back_to_hub_models_and_data() -> None:
    recipe, _ = load_recipe(RECIPES / "base-lora-ties.yaml")
    merged = lineage(recipe, "merged")
    # adapted = new_skill (trained on Qwen2-0.5B) applied to the instruct model; no step names
    assert merged.hub_models == ("Qwen/Qwen2-0.5B", "Qwen/Qwen2-0.5B-Instruct")
    assert merged.local_datasets == ("new_skill.jsonl",) and merged.relation == "merge"
    assert merged.methods == ("ties",)
    adapter = lineage(recipe, "new_skill")
    assert (adapter.relation, adapter.adapter_base) == ("adapter", "Qwen/Qwen2-0.5B")
    assert adapter.hub_models == ("Qwen/Qwen2-0.5B",)

    card = render_card(
        "x: 1\n", name="m", lineage=merged, scores=[Score("general", "loss", 2.5, "f")]
    )
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == ["Qwen/Qwen2-0.5B", "Qwen/Qwen2-0.5B-Instruct"]
    assert front["tags"] == ["lossless", "mergekit", "merge", "ties"]
    assert front["base_model_relation"] == "merge"
    metric = front["model-index"][0]["results"][0]["metrics"][0]
    assert (metric["type"], metric["value"]) == ("loss", 2.5)
    assert "adapted" not in card and "new_skill (" not in card  # step names stay internal
    assert "- new_skill.jsonl (local)" in card


def test_adapter_records_the_hub_id_of_its_base(tmp_path: Path) -> None:
    from lossless.tensors.adapters import record_base_model

    config = {"base_model_name_or_path": "/root/.cache/hub/models--org--base/snapshots/abc", "r": 8}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    record_base_model(tmp_path, "org/base", "v1")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved == {"base_model_name_or_path": "org/base", "r": 8, "revision": "v1"}
    record_base_model(tmp_path / "none", "org/base")  # no adapter: nothing to do


def test_the_card_is_what_huggingface_hubs_model_card_writes_back() -> None:
    """build_card skips `ModelCard` (whose module loads the hub client); its text must be the
    one `ModelCard(text)` gives back, with and without eval results, for merges and adapters."""
    from huggingface_hub import ModelCard

    recipe, _ = load_recipe(RECIPES / "base-lora-ties.yaml")
    scores = [Score("general", "loss", 2.5, "f"), Score("new", "accuracy", 0.123456789, "g")]
    for step in ("merged", "new_skill"):
        for given in ([], scores):
            card = render_card(
                "x: 1\n", name="m", lineage=lineage(recipe, step), scores=given, repo_id="o/m"
            )
            assert str(ModelCard(card)) == card, (step, given)
            assert ModelCard(card).data.to_dict()["tags"][0] == "lossless"
