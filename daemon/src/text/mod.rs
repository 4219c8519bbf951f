//! Text handling: tokenizer, chat template, sampling, streaming detokenization and stop strings.
