"""Reading and writing checkpoints tensor by tensor (safetensors memory maps, sharded output)."""
