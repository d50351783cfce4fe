"""Evidence about models beside their weights: architecture and parameter counts (`arch`, `params`), tokenizers
(`tokenizer`, `tokenizer_vocab`) and licences (`license`, `license_text`)."""
