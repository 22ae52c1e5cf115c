"""How close the student's features are to the teacher's: what ``HKDModel`` logs at every validation, per layer pair,
on one fixed batch (so the numbers are comparable across iterations).

* ``cosine``: the mean over images of the cosine similarity between the (adapted) student feature and the teacher
  feature, each flattened: what the KD loss pulls towards 1.
* ``linear_cka``: linear centred kernel alignment (Kornblith et al., ICML 2019) between the raw student and teacher
  features, pixels as samples and channels as dimensions: 1 when one is a rotation and scaling of the other, whatever
  their widths, so it needs no adapter and cannot be gamed by one.
"""
import torch
from torch.nn import functional as F


def cosine(student, teacher):
    """Mean over the batch of the cosine similarity of the flattened features (same shapes)."""
    return float(F.cosine_similarity(student.flatten(1).double(), teacher.flatten(1).double(), dim=1).mean())


def linear_cka(student, teacher):
    """Linear CKA of two (N, C, H, W) features of equal N, H, W (channel counts may differ); in [0, 1]."""
    x, y = (f.movedim(1, -1).reshape(-1, f.shape[1]).double() for f in (student, teacher))
    x, y = x - x.mean(0), y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else 0.0
