"""Mining: each user's rank window (retrieval), the hard negatives picked from it (selection), the chunked pipeline."""
