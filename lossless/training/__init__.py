"""Pieces of `train:` steps that are not the training loop itself: init, replay, freeze, ewc."""
