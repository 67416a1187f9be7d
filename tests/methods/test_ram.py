"""ram and ramplus_tl: overlap-aware averaging of task vectors."""

from __future__ import annotations

import torch

from tests.methods.helpers import merge, t

BASE = torch.zeros(4)
MODELS = [t(1.0, 0.5, 0.0, 0.001), t(0.0, 0.5, 0.2, 0.3)]


def test_ram_unique_kept_shared_averaged_small_dropped() -> None:
    # epsilon 0.01: contributors per entry [1, 2, 1, 1] (0.001 is below epsilon)
    got = merge("ram", MODELS, BASE, params={"epsilon": 0.01})
    torch.testing.assert_close(got, t(1.0, 0.5, 0.2, 0.3))


def test_ramplus_boosts_unique_entries_by_overlap_ratio() -> None:
    # model 1: shared 1 / unique 1 → rho 1; model 2: shared 1 / unique 2 → rho 0.5
    # r 0.5, alpha 1 → boosts 1.5 and 1.25 on the unique entries
    params = {"epsilon": 0.01, "r": 0.5, "alpha": 1.0}
    got = merge("ramplus_tl", MODELS, BASE, params=params)
    torch.testing.assert_close(got, t(1.5, 0.5, 0.25, 0.375))
    capped = merge("ramplus_tl", MODELS, BASE, params={**params, "alpha": 0.2})
    torch.testing.assert_close(capped, t(1.1, 0.5, 0.22, 0.33))
