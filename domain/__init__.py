"""Pure payment domain: money, statuses, the transition function and typed errors. No I/O."""
