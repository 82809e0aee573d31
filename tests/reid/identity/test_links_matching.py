"""Links in the matcher: AGREE joins below the appearance threshold (not below the floor), DISAGREE forbids,
both across batches (through the gallery, real Redis) and inside one batch."""

from __future__ import annotations

from dataclasses import replace

from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.geometry import AGREE, DISAGREE
from reid.identity.matcher import Matcher
from reid.identity.store import IdentityStore
from tests.reid.identity.vectors import gram_vectors, track


def matcher(redis_url: str, namespace: str) -> Matcher:
    cfg = MatcherConfig(redis=RedisConfig(url=redis_url, namespace=namespace), threshold=0.7, margin=0.03,
                        link_min_similarity=0.45)
    return Matcher(cfg, IdentityStore.from_config(cfg))


def test_agree_joins_an_unlike_looking_view_and_disagree_forbids(redis_url):
    # a: the person in c0; b: the same person from c1 (cosine 0.55: below the threshold); c: a look-alike (0.9).
    a, b, c, far = gram_vectors([[1, 0.55, 0.9, 0.3], [0.55, 1, 0.5, 0.3], [0.9, 0.5, 1, 0.3], [0.3, 0.3, 0.3, 1]])
    m = matcher(redis_url, "links1")
    first = m.match([track("c0", 1, 0, 5, a)])[0]
    plain = m.match([track("c1", 2, 1, 5, b)])[0]
    assert plain.is_new  # appearance alone: a new identity
    linked = m.match([replace(track("c1", 3, 1, 6, b), links={("c0", 1): AGREE})])[0]
    assert linked.global_id == first.global_id and linked.reason == "linked"
    forbidden = m.match([replace(track("c1", 4, 2, 6, c), links={("c0", 1): DISAGREE})])[0]
    assert forbidden.is_new and forbidden.global_id != first.global_id  # 0.9 alike, but standing elsewhere
    unlike = m.match([replace(track("c1", 5, 2, 6, far), links={("c0", 1): AGREE})])[0]
    assert unlike.global_id != first.global_id  # 0.3: below link_min_similarity, the link alone does not join


def test_links_inside_one_batch(redis_url):
    a, b = gram_vectors([[1, 0.55], [0.55, 1]])
    m = matcher(redis_url, "links2")
    r = m.match([track("c0", 1, 0, 5, a), replace(track("c1", 2, 0, 5, b), links={("c0", 1): AGREE})])
    assert r[0].global_id == r[1].global_id
    a2, c2 = gram_vectors([[1, 0.95], [0.95, 1]], seed=1)
    r = m.match([track("c0", 11, 10, 15, a2), replace(track("c1", 12, 10, 15, c2), links={("c0", 11): DISAGREE})])
    assert r[0].global_id != r[1].global_id


def test_a_link_to_a_view_that_joins_in_the_same_batch_carries_the_other_view_with_it(redis_url):
    """A person comes back into both views at once: c0's view looks like their identity (0.85) and joins it; c1's
    view does not (0.50), but the ground says it stands where c0's view stands (AGREE). It follows c0's view into
    the identity, as it would if c0's view had been decided in an earlier batch; without the link it founds one."""
    p, a, b = gram_vectors([[1, 0.85, 0.50], [0.85, 1, 0.55], [0.50, 0.55, 1]])
    for links, namespace in (({("c0", 2): AGREE}, "links3"), ({}, "links4")):
        m = matcher(redis_url, namespace)
        person = m.match([track("c0", 1, 0, 5, p)])[0].global_id
        ra, rb = m.match([track("c0", 2, 20, 25, a), replace(track("c1", 3, 20, 25, b), links=links)])
        assert ra.global_id == person and ra.reason == "matched", ra
        if links:
            assert rb.global_id == person and rb.reason == "linked", rb
        else:
            assert rb.is_new and rb.global_id != person, rb
