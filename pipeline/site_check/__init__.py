"""``python -m pipeline.site_check``: a site's ground rules and matcher threshold, measured from its own unlabeled
video (:mod:`.evidence` measures, :mod:`.suggest` derives, :mod:`.plots` shows)."""
