"""Validation against ground truth: `validate` runs the battery on every labelled zoo pair and reports error rates
and fitted thresholds; `peer` runs the peer tool modeldna on the same pairs."""
