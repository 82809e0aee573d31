"""Stages that misbehave on purpose, importable by the supervisor's spawned processes."""

from __future__ import annotations

from pipeline.embed_stage import EmbedStage


class WithholdingEmbedStage(EmbedStage):
    """An embed stage that finishes normally but never passes an end of stream on: its downstream waits forever."""

    def forward_end(self, camera_id: str) -> None:
        self.ended.add(camera_id)
