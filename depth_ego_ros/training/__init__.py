"""Self-supervised fine-tuning."""
