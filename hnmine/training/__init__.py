"""The built-in two-tower trainer: config, data, model, compiled ops, losses, the training loop, model files."""
