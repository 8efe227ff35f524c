"""The marketers' rules: conditions, the pure engine, rule state, the contact policy (cooldowns,
holdouts, caps, quiet hours, budgets), and the shell that keeps their state in Redis."""
