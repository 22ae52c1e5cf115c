"""How close the student's features are to the teacher's, as ``HKDModel``'s probe logs it at every validation
(docs/distillation.md)."""
import torch
from torch.nn import functional as F


def cosine(student, teacher):
    """Mean over the batch of the cosine similarity of the flattened features (same shapes)."""
    return float(F.cosine_similarity(student.flatten(1).double(), teacher.flatten(1).double(), dim=1).mean())


def linear_cka(student, teacher):
    """Linear CKA (Kornblith et al., ICML 2019) of two (N, C, H, W) features of equal N, H, W (channel counts may
    differ), pixels as samples and channels as dimensions; in [0, 1]."""
    x, y = (f.movedim(1, -1).reshape(-1, f.shape[1]).double() for f in (student, teacher))
    x, y = x - x.mean(0), y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0
