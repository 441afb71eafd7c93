"""What the hub says and asks residents, the same on every chat channel."""
