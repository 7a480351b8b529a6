"""Fine-tuning: optimizer, sharded train state, jitted step, the loop."""
