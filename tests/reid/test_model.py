import pytest
import torch
import torch.nn.functional as F

from reid.model import HACNN, build_model, count_parameters, region_grid, sample_regions


@pytest.fixture(scope="module")
def model() -> HACNN:
    torch.manual_seed(0)
    return HACNN(num_classes=743)


def test_eval_forward_returns_unit_halves(model):
    model.eval()
    emb = model(torch.rand(3, 3, 160, 64))
    assert emb.shape == (3, 1024)
    torch.testing.assert_close(emb[:, :512].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(emb[:, 512:].norm(dim=1), torch.ones(3))


def test_train_forward_gives_logits_and_features(model):
    model.train()
    out = model(torch.rand(4, 3, 160, 64))
    assert out.logits_global.shape == out.logits_local.shape == (4, 743)
    assert out.feat_global.shape == out.feat_local.shape == (4, 512)
    model.eval()


def test_parameter_count_matches_paper_scale(model):
    # HA-CNN embedding network: about 2.9 M parameters (classifiers excluded).
    n = count_parameters(model)
    assert abs(n - 2.9e6) / 2.9e6 < 0.05, n
    assert count_parameters(model, include_classifiers=True) == n + 2 * (512 * 743 + 743)


def test_compute_is_about_055_gmac(model):
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 160, 64))
    gmac = counter.get_total_flops() / 2e9
    assert 0.45 < gmac < 0.65, gmac


def test_wrong_input_size_is_rejected(model):
    with pytest.raises(ValueError, match="160x64"):
        model.eval()(torch.rand(1, 3, 128, 64))


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(KeyError, match="hacnn"):
        build_model("resnet")


def test_region_grid_equals_affine_grid():
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(6, 2, 3, dtype=dtype)
        for h, w in ((24, 28), (7, 5), (1, 3)):
            ref = F.affine_grid(theta, (6, 1, h, w), align_corners=False)
            torch.testing.assert_close(region_grid(theta, h, w), ref, atol=1e-6, rtol=0)


def test_sample_regions_matches_per_region_affine_sampling():
    torch.manual_seed(2)
    x = torch.rand(2, 5, 20, 16)
    shifts = torch.tanh(torch.randn(2, 4, 2))
    out = sample_regions(x, shifts, (1.0, 0.25), (6, 7))
    assert out.shape == (8, 5, 6, 7)
    for b in range(2):
        for r in range(4):
            theta = torch.tensor([[[1.0, 0, shifts[b, r, 0]], [0, 0.25, shifts[b, r, 1]]]])
            grid = F.affine_grid(theta, (1, 5, 6, 7), align_corners=False)
            ref = F.grid_sample(x[b : b + 1], grid, align_corners=False)
            torch.testing.assert_close(out[b * 4 + r], ref[0], atol=1e-5, rtol=0)


def test_hard_attention_starts_as_four_horizontal_stripes(model):
    model.eval()
    feats = torch.randn(2, 128, 40, 16)
    shifts = model.attentions[0].hard(feats)
    expected_ty = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(shifts[..., 0], torch.zeros(2, 4))
    torch.testing.assert_close(shifts[..., 1], expected_ty.expand(2, 4))
