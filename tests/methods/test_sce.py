"""sce: variance selection, energy weights, sign election."""

from __future__ import annotations

import torch

from tests.methods.helpers import merge, t

BASE = torch.zeros(4)


def test_energy_weights_and_sign_election() -> None:
    # energies: mean square of [2,1] = 2.5, of [-1,3] = 5 → weights 1/3, 2/3
    # signs of the sum [1, 4] are +,+; entry 0 only the first agrees → 2; entry 1 both →
    # (1·1/3 + 3·2/3) / (1/3 + 2/3) = 7/3
    got = merge("sce", [t(2.0, 1.0), t(-1.0, 3.0)], torch.zeros(2))
    torch.testing.assert_close(got, t(2.0, 7 / 3))


def test_select_topk_keeps_the_highest_variance_entries_only() -> None:
    # variances across models: [2.25, 1, 0, 0] → 2 non-zero, topk 0.5 → keep entry 0 only;
    # entry 2 (0.5 in both models, variance 0) is dropped too
    models = [t(2.0, 1.0, 0.5, 0.0), t(-1.0, 3.0, 0.5, 0.0)]
    got = merge("sce", models, BASE, params={"select_topk": 0.5})
    torch.testing.assert_close(got, t(2.0, 0.0, 0.0, 0.0))
    assert torch.equal(
        merge("sce", models, BASE, params={"select_topk": 0.5, "int8_mask": True}), got
    )
