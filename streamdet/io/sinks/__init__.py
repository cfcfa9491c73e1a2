"""Where results go: alerts and dead letters."""
