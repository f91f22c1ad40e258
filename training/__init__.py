"""Training: one loop for the tokenizer, the LAM and the dynamics (`genie train`, `genie plot`,
`genie bench train`). See docs/TRAINING.md."""
