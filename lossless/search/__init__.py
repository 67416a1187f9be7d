"""Merge search: vary a merge stage's config, measure each trial with an eval step, keep the best.

space.py     vary paths, substitution into a config, the grid (pure data, torch-free)
samplers.py  grid | random | optuna behind one ask/tell interface
judge.py     a trial's scores → objective, constraint margins, feasible (gate arithmetic)
loop.py      the trial loop over a sampler and an `evaluate(params)` function
report.py    trials.json / trials.csv / tradeoff.png / best.yaml
stage.py     the merge stage with `search:`: cached merge + eval per trial, the best as output
"""
