"""Questions: serve from the bank (the AI cache) first, generate only the deficit."""
