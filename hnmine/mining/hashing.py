"""Counter-based random numbers: every draw depends only on (seed, user id, position).

A stateful generator would make a user's negatives depend on how many users came before it in
the chunk; hashing (seed, user key, position) instead gives the same draw for the same user
whatever the chunk size, thread count or user order.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def id_keys(ids: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per id: int ids by value, string ids by a blake2b digest."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return splitmix64(ids.astype(np.int64).view(np.uint64))
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
            for v in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def user_streams(seed: int, user_keys: np.ndarray) -> np.ndarray:
    """One independent stream key per user for the given seed."""
    seed_key = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return splitmix64(np.asarray(user_keys, dtype=np.uint64) ^ seed_key)


def uniforms(streams: np.ndarray, width: int, salt: int = 0) -> np.ndarray:
    """Uniforms in the open interval (0, 1), shape (len(streams), width), float64.

    Column j of row i depends only on ``streams[i]``, ``j`` and ``salt``.
    """
    cols = (np.arange(width, dtype=np.uint64) + np.uint64(1 + salt * 1_000_003)) * _GOLDEN
    streams = np.ascontiguousarray(streams, dtype=np.uint64)
    out = np.empty((len(streams), width), dtype=np.float64)
    uniforms_into(streams, cols, out)  # splitmix64(stream ^ col), compiled: one pass, no temporaries
    return out


def pair_uniforms(streams: np.ndarray, item_keys: np.ndarray) -> np.ndarray:
    """One uniform in (0, 1) per (user stream, item key) pair, element-wise."""
    bits = splitmix64(np.asarray(streams, dtype=np.uint64) ^ splitmix64(item_keys))
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


@njit(cache=True, parallel=True)
def uniforms_into(streams, cols, out):  # pragma: no cover - compiled
    """``out[i, j]``: splitmix64(streams[i] ^ cols[j]) as a uniform in (0, 1): :func:`uniforms`, compiled."""
    m, width = out.shape
    scale = 1.0 / 9007199254740992.0  # 2**-53
    for i in prange(m):
        s = streams[i]
        for j in range(width):
            z = (s ^ cols[j]) + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            z = z ^ (z >> np.uint64(31))
            out[i, j] = (np.float64(z >> np.uint64(11)) + 0.5) * scale
