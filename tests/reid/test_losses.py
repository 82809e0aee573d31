"""The training losses, and what ``apart`` changes: pairs of classes that may be one person are never negatives."""

import torch
import torch.nn.functional as F

from reid.losses import batch_hard_triplet, cross_entropy


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, 6, generator=g), torch.arange(6).repeat(4), torch.randn(24, 8, generator=g)


def test_all_apart_is_the_usual_loss():
    logits, labels, feats = _batch()
    apart = torch.ones(6, 6, dtype=torch.bool).fill_diagonal_(False)
    torch.testing.assert_close(cross_entropy(logits, labels, 0.1, apart),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))
    torch.testing.assert_close(batch_hard_triplet(feats, labels, 0.3, apart), batch_hard_triplet(feats, labels, 0.3))


def test_a_class_that_may_be_the_same_person_exerts_no_push():
    logits, labels, feats = _batch()
    apart = torch.ones(6, 6, dtype=torch.bool).fill_diagonal_(False)
    apart[0, 1] = apart[1, 0] = False  # labels 0 and 1 may be one person
    logits = logits.clone().requires_grad_(True)
    cross_entropy(logits, labels, 0.1, apart).backward()
    grad = logits.grad
    assert (grad[labels == 0, 1] == 0).all() and (grad[labels == 1, 0] == 0).all()
    assert (grad[labels == 0, 2] != 0).all()  # a class proven apart still competes


def test_triplet_never_pushes_apart_classes_that_may_be_one_person():
    # Classes 0 and 1 sit together (one person under two labels), class 2 far away.
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, 0.05], [1.0, 0.06], [-1.0, 0.0], [-1.0, 0.01]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    apart = torch.ones(3, 3, dtype=torch.bool).fill_diagonal_(False)
    assert batch_hard_triplet(feats, labels, 0.3, apart) > 0.1  # 0 and 1 treated as two people
    apart[0, 1] = apart[1, 0] = False
    assert batch_hard_triplet(feats, labels, 0.3, apart) == 0  # only class 2 is a negative: far enough
