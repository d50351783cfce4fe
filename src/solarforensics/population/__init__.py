"""Population scale: fingerprint models once (range reads), keep them in an index, scan one model against all, and
recover lineage trees; crawls scale out on Ray."""
