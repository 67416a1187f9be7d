"""Finding the recipe a model was made with: lossless.yaml, mergekit_config.yml, the model card."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.hub.reproduce import card_section, fetch_recipe, find_lock, find_recipe, is_hub_recipe
from tests.fake_hub import FakeHub, use_fake_hub

LOSSLESS = "train:\n  s: {base: org/base, data: d.jsonl}\n"
MERGEKIT = "models:\n  - model: org/a\n  - model: org/b\nmerge_method: slerp\nbase_model: org/a\n"
# A model card the way mergekit writes one: metadata front matter, prose, install snippet, config.
CARD = f"""---
base_model: [org/a, org/b]
tags: [mergekit, merge]
---
# merged

Install with:

```sh
pip install mergekit
```

```yaml
# a yaml block that is not a recipe
widget: {{text: hello}}
```

### Configuration

The following YAML configuration was used to produce this model:

```yaml
{MERGEKIT}```
"""


def test_find_recipe_order(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(CARD)
    assert find_recipe(tmp_path) == ("README.md", MERGEKIT)
    (tmp_path / "mergekit_config.yml").write_text(MERGEKIT + "# file\n")
    assert find_recipe(tmp_path) == ("mergekit_config.yml", MERGEKIT + "# file\n")
    (tmp_path / "lossless.yaml").write_text(LOSSLESS)
    assert find_recipe(tmp_path) == ("lossless.yaml", LOSSLESS)


def test_no_recipe_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# a model\n\n```yaml\nfoo: 1\n```\n")
    with pytest.raises(LosslessError) as info:
        find_recipe(tmp_path)
    text = str(info.value)
    assert str(tmp_path) in text and "mergekit_config.yml" in text and "merge_method" in text


def test_card_section_round_trip(tmp_path: Path) -> None:
    lock = '{\n  "inputs": {},\n  "lossless_lock": 1\n}\n'
    section = card_section(LOSSLESS, lock, repo_id="me/model")
    assert "lossless run hub:me/model" in section
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# model\n\n" + section)
    assert find_recipe(tmp_path) == ("README.md", LOSSLESS)
    assert find_lock(tmp_path) == lock
    (tmp_path / "lossless.lock").write_text("{}")
    assert find_lock(tmp_path) == "{}"  # the file wins over the card
    assert find_lock(tmp_path / "nothing-here") is None


def test_fetch_recipe_downloads_no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHub()
    files = {
        "README.md": CARD.encode(),
        "config.json": b"{}",
        "model.safetensors": b"weights",
        "pytorch_model.bin": b"pickle",
    }
    first = fake.add_commit("org/merged", files)
    fake.add_commit("org/merged", {**files, "lossless.yaml": LOSSLESS.encode()})
    assert is_hub_recipe("hub:org/merged") and not is_hub_recipe("org/merged")
    with fake.serving():
        use_fake_hub(fake, monkeypatch, tmp_path / "hf")
        folder, name, text = fetch_recipe("hub:org/merged", quiet=True)
        assert (name, text) == ("lossless.yaml", LOSSLESS)
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "lossless.yaml"]
        _, name, text = fetch_recipe(f"hub:org/merged@{first}", quiet=True)
        assert (name, text) == ("README.md", MERGEKIT)
        with pytest.raises(LosslessError, match="repo org/missing not found"):
            fetch_recipe("hub:org/missing", quiet=True)
    fetched = [p for m, p, _ in fake.requests if "/resolve/" in p]
    assert fetched and not [p for p in fetched if p.endswith(("safetensors", ".bin", "json"))]


def test_a_hostile_card_is_not_a_recipe_and_does_not_hang(tmp_path: Path) -> None:
    """A billion-laughs block in someone's card is skipped within the YAML limits; the real
    config after it is still found."""
    bomb = (Path(__file__).resolve().parent / "hostile" / "billion-laughs.yaml").read_text()
    (tmp_path / "README.md").write_text(f"```yaml\n{bomb}```\n\n```yaml\n{MERGEKIT}```\n")
    assert find_recipe(tmp_path) == ("README.md", MERGEKIT)
