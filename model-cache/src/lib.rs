//! DistilBERT sentiment inference shared by the servers and the benchmark.
