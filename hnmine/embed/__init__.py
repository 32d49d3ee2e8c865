"""Embeddings for mining: exported from a trained model, from SVD of the positives, or two models blended."""
