"""Where bytes come from: local files and Hub repos, behind one interface (`TensorSource`). Knows nothing of families
or metrics."""
