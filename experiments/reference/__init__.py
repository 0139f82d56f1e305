"""Independent PyTorch peers of meshlm's model (Hugging Face's GPT-2 and a plain one): the yardsticks the benchmarks
and parity tests hold meshlm against. torch is imported only when a peer is asked for."""
