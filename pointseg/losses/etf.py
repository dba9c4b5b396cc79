"""The simplex equiangular tight frame (ETF, Papyan et al. PNAS 2020), the fixed classifier W* of
CeCo's Eq. 2: shared by any head or loss that classifies against a fixed frame (the center
branch, Table 1's fixed point classifier)."""

from __future__ import annotations

import math

import torch


def random_orthonormal(dim: int, num: int, seed: int = 0) -> torch.Tensor:
    """U (dim, num) float64 with orthonormal columns: Q of the QR of a seeded Gaussian.

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)``, so every process and
    every device gets the same matrix for the same seed.
    """
    if num > dim:
        raise ValueError(f"random_orthonormal: cannot have {num} orthonormal columns in {dim} dimensions")
    gen = torch.Generator().manual_seed(int(seed))
    u, r = torch.linalg.qr(torch.randn(dim, num, generator=gen, dtype=torch.float64))
    # Sign fix so U does not depend on the LAPACK build's sign convention.
    return u * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()).double())


def simplex_etf(
    num_classes: int, dim: int, alpha: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The fixed classifier W* (dim, K) of Eq. 2: ``α·sqrt(K/(K−1))·U(I_K − 1 1ᵀ/K)``.

    U = ``random_orthonormal(dim, K, seed)``. Columns w_k have norm α and pairwise cosine
    −1/(K−1). The ETF spans only K−1 dimensions; for ``dim == K−1`` (too small for a U with K
    columns) the same frame is built in an orthonormal basis B (K, K−1) of the subspace orthogonal
    to the all-ones vector, rotated by a seeded U (K−1, K−1): W* = α·sqrt(K/(K−1))·U Bᵀ.
    """
    k, d = int(num_classes), int(dim)
    if k < 2:
        raise ValueError(f"simplex_etf: need at least 2 classes, got {k}")
    if d < k - 1:
        raise ValueError(f"simplex_etf: a simplex ETF of {k} classes needs dim >= {k - 1}, got {d}")
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if d >= k:
        frame = random_orthonormal(d, k, seed) @ centering
    else:
        basis, _ = torch.linalg.qr(centering[:, : k - 1])
        frame = random_orthonormal(d, d, seed) @ basis.T
    return (alpha * math.sqrt(k / (k - 1)) * frame).to(dtype)


__all__ = ["random_orthonormal", "simplex_etf"]
