"""The loop: train -> export -> mine -> retrain, round by round, in one resumable run directory."""
