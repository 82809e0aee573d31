"""Evaluation against hand-worked cases and against torchreid's results in ../shared/reference."""

import numpy as np
import pytest

from reid.metrics import distance_matrix, evaluate_rank, re_ranking


def test_hand_case_perfect_and_second_rank():
    # Query 0 (id 1) finds its match first; query 1 (id 2) finds its match second.
    dist = np.array([[0.1, 0.5, 0.9], [0.2, 0.3, 0.8]])
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3])
    q_cams, g_cams = np.array([1, 1]), np.array([2, 2, 2])
    # query 1: ranks gallery [0 (id 1), 1 (id 2), 2] -> first hit at rank 2, AP = 1/2
    r = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    np.testing.assert_allclose(r.cmc, [0.5, 1.0, 1.0])
    assert r.mAP == pytest.approx((1.0 + 0.5) / 2)


def test_average_precision_with_two_true_matches():
    # Ranked ids: [1, 9, 1, 9] -> hits at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    r = evaluate_rank(dist, np.array([1]), np.array([1, 9, 1, 9]), np.array([1]), np.array([2, 2, 2, 2]))
    assert r.mAP == pytest.approx((1 + 2 / 3) / 2)
    np.testing.assert_allclose(r.cmc[:2], [1, 1])


def test_same_identity_same_camera_is_removed():
    # The nearest gallery image is the same person from the query's own camera: it must not count.
    dist = np.array([[0.0, 0.5, 0.6]])
    g_pids, g_cams = np.array([1, 2, 1]), np.array([1, 2, 2])
    r = evaluate_rank(dist, np.array([1]), g_pids, np.array([1]), g_cams, max_rank=2)
    np.testing.assert_allclose(r.cmc, [0.0, 1.0])
    assert r.mAP == pytest.approx(0.5)
    # Another person from the same camera stays in the ranking.
    r2 = evaluate_rank(np.array([[0.0, 0.5]]), np.array([1]), np.array([7, 1]), np.array([1]), np.array([1, 2]))
    assert r2.cmc[0] == 0.0


def test_junk_is_never_scored_and_distractors_count_as_misses():
    dist = np.array([[0.1, 0.2, 0.3]])
    cams = np.array([2, 2, 2])
    junk_first = evaluate_rank(dist, np.array([5]), np.array([-1, 5, 3]), np.array([1]), cams)
    assert junk_first.cmc[0] == 1.0 and junk_first.mAP == 1.0
    distractor_first = evaluate_rank(dist, np.array([5]), np.array([0, 5, 3]), np.array([1]), cams)
    assert distractor_first.cmc[0] == 0.0 and distractor_first.mAP == pytest.approx(0.5)


def test_query_without_valid_match_is_skipped():
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    r = evaluate_rank(dist, np.array([1, 4]), np.array([1, 2]), np.array([1, 1]), np.array([2, 2]))
    assert r.num_valid_queries == 1
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(dist, np.array([8, 9]), np.array([1, 2]), np.array([1, 1]), np.array([2, 2]))


@pytest.mark.parametrize(
    "name,key", [("market_protocol_fixture.npz", ""), ("market_protocol_fixture_junk.npz", "_junk_dropped")]
)
def test_matches_torchreid_reference(shared, name, key):
    ref = np.load(shared / "reference" / name)
    r = evaluate_rank(ref["distmat"], ref["q_pids"], ref["g_pids"], ref["q_camids"], ref["g_camids"], max_rank=10)
    np.testing.assert_allclose(r.cmc, ref["cmc" + key], atol=1e-6, rtol=0)
    assert r.mAP == pytest.approx(float(ref["mAP" + key]), abs=1e-6)


def test_reference_with_junk_and_distractors_dropped(shared):
    ref = np.load(shared / "reference" / "market_protocol_fixture_junk.npz")
    keep = ref["g_pids"] > 0
    r = evaluate_rank(ref["distmat"][:, keep], ref["q_pids"], ref["g_pids"][keep], ref["q_camids"],
                      ref["g_camids"][keep], max_rank=10)
    np.testing.assert_allclose(r.cmc, ref["cmc_junk_and_distractor_dropped"], atol=1e-6, rtol=0)
    assert r.mAP == pytest.approx(float(ref["mAP_junk_and_distractor_dropped"]), abs=1e-6)


def test_distances():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    g = np.array([[2.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(distance_matrix(q, g, "cosine"), [[0, 1 - 2**-0.5], [1, 1 - 2**-0.5]], atol=1e-12)
    np.testing.assert_allclose(distance_matrix(q, g, "euclidean"), [[1, 1], [8**0.5, 2**0.5]], atol=1e-12)
    with pytest.raises(ValueError, match="cosine"):
        distance_matrix(q, g, "manhattan")


def test_re_ranking_fixes_a_query_that_its_neighbours_disambiguate():
    """Two clusters; one query of identity 1 sits midway and ranks a wrong gallery image first, but its
    k-reciprocal neighbours (the other queries of its identity) pull it back to its own cluster."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (8, 8)) + np.eye(8)[0] * 3
    b = rng.normal(0, 0.05, (8, 8)) + np.eye(8)[1] * 3
    gallery = np.vstack([a[:4], b[:4]])
    g_pids = np.array([1] * 4 + [2] * 4)
    queries = np.vstack([a[4:], b[4:]])
    queries[0] = 0.5 * a[5] + 0.5 * b[5]  # ambiguous member of identity 1, midway
    q_pids = np.array([1] * 4 + [2] * 4)
    qg = distance_matrix(queries, gallery, "euclidean")
    qq = distance_matrix(queries, queries, "euclidean")
    gg = distance_matrix(gallery, gallery, "euclidean")
    rr = re_ranking(qg, qq, gg, k1=4, k2=2, lambda_value=0.3)
    assert rr.shape == qg.shape
    cams_q, cams_g = np.ones(8, int), np.full(8, 2)
    base = evaluate_rank(qg, q_pids, g_pids, cams_q, cams_g)
    new = evaluate_rank(rr, q_pids, g_pids, cams_q, cams_g)
    assert base.cmc[0] < 1.0 and new.cmc[0] == 1.0
    assert new.mAP > base.mAP
    # lambda = 1 keeps the original (column-normalised) distance: the ranking is unchanged.
    same = re_ranking(qg, qq, gg, lambda_value=1.0)
    np.testing.assert_array_equal(np.argsort(same, 1), np.argsort(qg / qg.max(), 1))
