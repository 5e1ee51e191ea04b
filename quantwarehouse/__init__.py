"""quantwarehouse: an open warehouse for crypto market data and the research on top of it."""
