"""``python -m pipeline.site_check``: a site's ground rules and matcher threshold, measured from its own unlabeled
video (:mod:`.evidence` measures, :mod:`.suggest` derives, :mod:`.report` puts it together, :mod:`.plots` shows).

The names below are where a check's output lands in a run directory (the service's calibration page shows it);
this module stays import-light for the service's sake."""

REPORT_FOLDER = "site_check"  # under the config's run directory, unless --out says otherwise
REPORT_JSON = "site_check.json"
REPORT_PNG = "site_check.png"
