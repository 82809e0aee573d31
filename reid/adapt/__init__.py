"""Learning a site's own cameras without labels: harvest tracks from its recorded video, build pseudo-identities
from what the video proves, fine-tune HA-CNN on them (``python -m reid.adapt``; see its ``__main__``)."""
