"""Case files: `run` executes a case (configs/cases/*.toml) step by step (`steps`), judges the claims ledger
(`claims`), checks a run against published numbers (`reproduce`); `demo` runs the Solar vs GLM case on replicas."""
