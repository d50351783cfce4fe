"""Full-scale virtual replicas of Solar-Open-100B, GLM-4.5-Air, Phi-3.5-MoE and INTELLECT-3: real configs, names,
shapes and shard layouts (`specs`), tokenizers (`tokenizers`), every weight byte generated from a seed (`values`),
served as Hub repos (`store`)."""
