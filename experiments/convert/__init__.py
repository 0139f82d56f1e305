"""Checkpoints in and out: Hugging Face GPT-2 layout <-> meshlm run directories (`meshlm convert`)."""
