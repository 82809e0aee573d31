"""A correction on real video: the crowded terrace1 clip, tracked without appearance (the tracker that swaps people
at crossings), gives one track an identity the ground later proves wrong; the match stage moves it and says so."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.events import track_identities
from pipeline.supervisor import Supervisor
from reid.paths import PROJECT_ROOT, shared_root

from .conftest import free_port

DURATION_S = 25.0  # the correction falls at 23.4 s of video


@pytest.mark.slow
def test_a_wrong_identity_on_the_crowded_clip_is_corrected(tmp_path):
    if not (shared_root() / "video" / "epfl_terrace1_crowd").is_dir():
        pytest.skip("the crowded terrace1 clip is not in ../shared")
    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml").with_run_dir(tmp_path)
    det = cfg.detector
    cfg = cfg.model_copy(update={
        "endpoints": cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{free_port()}"}),
        "detector": det.model_copy(update={"appearance": det.appearance.model_copy(update={"enabled": False})})})
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=DURATION_S, status=False)
    assert sup.run() == 0
    events = list(sup.recorder.spilled())
    fixes = [e for e in events if e["kind"] == "identity.corrected"]
    assert fixes, "the ground check should have moved a track"
    fix = fixes[0]
    assert fix["reason"] in ("corrected:same_place", "corrected:apart")
    assert fix["from_global_id"] != fix["global_id"]
    first = next(e for e in events if (e["camera_id"], e["track_id"]) == (fix["camera_id"], fix["track_id"]))
    assert first["global_id"] == fix["from_global_id"], "it is the track's first identity that was wrong"
    # Whoever keeps a track -> identity map from the events ends with the corrected one.
    assert track_identities(events)[(fix["camera_id"], fix["track_id"])] == fix["global_id"]
